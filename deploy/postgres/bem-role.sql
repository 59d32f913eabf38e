-- Run once when the database is created (the postgres image runs /docker-entrypoint-initdb.d).
-- Behind PgBouncer BEM cannot send these as startup parameters, so the role carries them:
-- BEM_DB_STATEMENT_TIMEOUT_MS (30 s) and no JIT (docs/operations.md, "PgBouncer").
ALTER ROLE bem SET statement_timeout = '30s';
ALTER ROLE bem SET jit = off;

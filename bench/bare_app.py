"""The yardstick of bench/hotpath.py: a bare FastAPI app reading one JSONB row (an element
payload) through SQLAlchemy async + asyncpg, on BEM's engine settings (pool 10 + 5,
pre-ping), served by uvicorn with 2 workers. Run by hotpath.py (``BARE_PORT``,
``BEM_DATABASE_URL``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

URL = make_url(os.environ["BEM_DATABASE_URL"]).set(drivername="postgresql+asyncpg")
engine = create_async_engine(URL, pool_size=10, max_overflow=5, pool_pre_ping=True)
chosen: dict[str, str] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.connect() as conn:
        chosen["hash"] = (
            await conn.execute(text("SELECT hash FROM element_payloads LIMIT 1"))
        ).scalar_one()
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/db")
async def one_row() -> Any:
    async with engine.connect() as conn:
        row = await conn.execute(
            text("SELECT doc FROM element_payloads WHERE hash = :hash"), {"hash": chosen["hash"]}
        )
        return row.scalar_one()


if __name__ == "__main__":
    port = int(os.environ["BARE_PORT"])
    uvicorn.run("bare_app:app", host="127.0.0.1", port=port, workers=2, log_level="warning")

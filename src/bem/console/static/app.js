// The console's pages, routed by the URL's hash (#/projects/…), each drawn from BEM's API.
import { api, ApiError, download, keep, session, signOut } from "./api.js";
import { h, mount, number, problemText, say, svg, table, when } from "./dom.js";
import { Viewer } from "./viewer.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const PAGE = 50;
const VIEWER_MATCH_LIMIT = 20_000; // elements a selector may colour in the viewer
let leave = []; // what the current page must stop (live feeds, timers) when another opens
let me = null; // the signed-in user, asked once per sign-in

function whoAmI() {
  me ??= api("/v1/me").catch((error) => {
    me = null;
    throw error;
  });
  return me;
}

function crumb(...parts) {
  mount(crumbs, parts.map(([label, href]) => (href ? h("a", { href }, label) : h("span", { "aria-current": "page" }, label))));
}

function failure(error) {
  return h("p", { class: "error", role: "alert" }, problemText(error));
}

async function all(path, params, limit = Infinity) {
  const items = [];
  let cursor;
  do {
    const page = await api(path, { params: { ...params, limit: 1000, cursor } });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < limit);
  return items;
}

// ---------------------------------------------------------------- sign-in

function signinPage() {
  crumb(["Sign in"]);
  const email = h("input", { id: "email", type: "email", required: true, autocomplete: "email" });
  const code = h("input", { id: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true });
  const totp = h("input", { id: "totp", inputmode: "numeric", autocomplete: "one-time-code" });
  const totpRow = h("div", { hidden: true }, h("label", { for: "totp" }, "Authenticator code (TOTP)"), totp);
  const message = h("p", { role: "alert" });
  const codeForm = h(
    "form",
    {
      hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const pair = await api("/v1/auth/otp/verify", {
            method: "POST",
            body: { email: email.value, code: code.value, totp_code: totp.value || null },
          });
          keep(pair);
          location.hash = "#/";
        } catch (error) {
          if (error instanceof ApiError && error.problem.type?.endsWith("/second-factor-required")) {
            totpRow.hidden = false;
            totp.focus();
          }
          mount(message, failure(error));
        }
      },
    },
    h("div", {}, h("label", { for: "code" }, "The code we emailed you"), code),
    totpRow,
    h("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  const emailForm = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api("/v1/auth/otp/request", { method: "POST", body: { email: email.value } });
          codeForm.hidden = false;
          mount(message, h("p", {}, `If ${email.value} has an account, a code is on its way.`));
          code.focus();
        } catch (error) {
          mount(message, failure(error));
        }
      },
    },
    h("div", {}, h("label", { for: "email" }, "Email"), email),
    h("button", { type: "submit" }, "Email me a code"),
  );
  mount(main, h("section", { class: "signin" }, h("h1", {}, "Sign in to BEM"), emailForm, codeForm, message));
  email.focus();
}

// ---------------------------------------------------------------- browse

async function projectsPage() {
  crumb(["Projects"]);
  const projects = await all("/v1/projects");
  mount(
    main,
    h("h1", {}, "Projects"),
    projects.length
      ? h("div", { class: "cards" }, projects.map((p) => h("div", { class: "card" }, h("a", { href: `#/projects/${p.id}` }, p.name), h("p", { class: "muted" }, p.description || ""))))
      : h("p", { class: "muted" }, "No projects yet."),
  );
}

function activity(projectId) {
  const list = h("ol", { class: "activity", reversed: true, "aria-label": "Live activity" });
  const state = h("span", { class: "muted" }, "connecting…");
  let socket;
  let stopped = false;
  let last = null;
  const connect = () => {
    const held = session();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = last === null ? "" : `?after=${last}`;
    socket = new WebSocket(`${scheme}://${location.host}/v1/projects/${projectId}/events/ws${after}`, ["bem.bearer", held.access_token]);
    socket.onopen = () => { state.textContent = "live"; };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      const event = data.event;
      if (!event) return;
      last = event.id;
      list.prepend(h("li", { class: "event" }, h("strong", {}, event.kind), " ", h("span", { class: "muted" }, when(event.created_at)), " ", describe(event)));
      while (list.children.length > 50) list.lastChild.remove();
    };
    socket.onclose = () => {
      state.textContent = "reconnecting…";
      // The server closes a feed whose token has expired: any API call refreshes it first.
      if (!stopped) setTimeout(() => api("/v1/me").catch(() => null).finally(connect), 2000);
    };
  };
  const describe = (event) => {
    const d = event.data || {};
    const label = event.kind === "version.created" ? `version ${d.seq}` : d.kind ? `${d.kind} job` : d.name;
    if (d.version_id) return h("a", { href: `#/versions/${d.version_id}` }, label);
    return label || "";
  };
  connect(); // from now on; after a drop, from the last event seen
  leave.push(() => { stopped = true; socket?.close(); });
  return h("section", { class: "panel" }, h("h2", {}, "Activity ", state), list);
}

async function projectPage(projectId) {
  const [project, models] = await Promise.all([api(`/v1/projects/${projectId}`), all(`/v1/projects/${projectId}/models`)]);
  crumb(["Projects", "#/"], [project.name]);
  mount(
    main,
    h("h1", {}, project.name),
    h("p", {}, h("a", { href: `#/projects/${projectId}/settings` }, "Settings (owners): members, webhooks, tokens")),
    h(
      "div",
      { class: "split" },
      h("section", {}, h("h2", {}, "Models"), models.length ? table([{ key: "name", label: "Model", cell: (m) => h("a", { href: `#/models/${m.id}` }, m.name) }, { key: "created_at", label: "Created", cell: (m) => when(m.created_at) }], models) : h("p", { class: "muted" }, "No models yet.")),
      activity(projectId),
    ),
  );
}

async function modelPage(modelId) {
  const model = await api(`/v1/models/${modelId}`);
  const [project, versions] = await Promise.all([api(`/v1/projects/${model.project_id}`), api(`/v1/models/${modelId}/versions`, { params: { limit: 100 } })]);
  crumb(["Projects", "#/"], [project.name, `#/projects/${project.id}`], [model.name]);
  const file = h("input", { id: "file", type: "file", required: true, accept: ".ifc,.ifczip,.dxf,.ndjson,.json" });
  const message = h("input", { id: "message", maxlength: "2000" });
  const result = h("div", { role: "alert" });
  const upload = h(
    "form",
    {
      class: "row",
      onsubmit: async (e) => {
        e.preventDefault();
        const form = new FormData();
        form.append("file", file.files[0]);
        if (message.value) form.append("message", message.value);
        try {
          const job = await api(`/v1/models/${modelId}/imports`, { method: "POST", body: form });
          location.hash = `#/jobs/${job.id}`;
        } catch (error) {
          mount(result, failure(error));
        }
      },
    },
    h("div", {}, h("label", { for: "file" }, "IFC, IFCZIP, DXF, NDJSON or JSON file"), file),
    h("div", { class: "grow" }, h("label", { for: "message" }, "What changed"), message),
    h("button", { class: "primary", type: "submit" }, "Import"),
  );
  mount(
    main,
    h("h1", {}, model.name),
    h("h2", {}, "Import a file"),
    upload,
    result,
    h("h2", {}, "Versions"),
    versions.items.length
      ? table(
          [
            { key: "seq", label: "#", num: true, cell: (v) => h("a", { href: `#/versions/${v.id}` }, v.seq ?? "—") },
            { key: "message", label: "Message" },
            { key: "source_name", label: "Source" },
            { key: "element_count", label: "Elements", num: true },
            { key: "status", label: "Status" },
            { key: "created_at", label: "Uploaded", cell: (v) => when(v.created_at) },
          ],
          versions.items,
        )
      : h("p", { class: "muted" }, "No versions yet."),
  );
}

async function jobPage(jobId) {
  crumb(["Projects", "#/"], ["Import"]);
  const bar = h("progress", { max: "100", value: "0", "aria-label": "Progress" });
  const text = h("p", { role: "status" });
  mount(main, h("h1", {}, "Import"), bar, text);
  let timer;
  const poll = async () => {
    const job = await api(`/v1/jobs/${jobId}`);
    bar.value = job.progress.percent;
    text.textContent = `${job.status} ${job.progress.phase ?? ""} ${job.progress.done}${job.progress.total ? ` of ${job.progress.total}` : ""}`;
    if (job.status === "succeeded") location.hash = `#/versions/${job.version_id}`;
    else if (job.status === "failed") mount(text, failure({ message: `${job.error.type}: ${job.error.detail}` }));
    else timer = setTimeout(poll, 500);
  };
  leave.push(() => clearTimeout(timer));
  await poll();
}

// ---------------------------------------------------------------- project settings

const ROLES = ["viewer", "editor", "owner"];
const SCOPES = ["projects:read", "projects:write", "models:write"];

// One section of the settings page: drawn by fill(), drawn again after each change; an API
// error (a non-owner gets 403) is shown in the section instead of failing the page.
function section(title, fill) {
  const body = h("div", {});
  const redraw = async () => {
    try {
      mount(body, await fill(redraw));
    } catch (error) {
      mount(body, failure(error));
    }
  };
  redraw();
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), body);
}

function secretShown(label, secret) {
  return h("p", { role: "alert" }, `${label} (shown once; store it now): `, h("code", {}, secret));
}

async function settingsPage(projectId) {
  const project = await api(`/v1/projects/${projectId}`);
  crumb(["Projects", "#/"], [project.name, `#/projects/${projectId}`], ["Settings"]);
  const members = section("Members", async (redraw) => {
    const rows = await all(`/v1/projects/${projectId}/members`);
    const email = h("input", { id: "member-email", type: "email", required: true });
    const role = h("select", { id: "member-role" }, ROLES.map((r) => h("option", { value: r }, r)));
    const message = h("div", { role: "alert" });
    const change = (member, value) =>
      api(`/v1/projects/${projectId}/members/${member.user_id}`, { method: "PUT", body: { role: value } }).then(redraw, (e) => mount(message, failure(e)));
    return [
      table(
        [
          { key: "email", label: "Email" },
          { key: "name", label: "Name" },
          { key: "role", label: "Role", cell: (m) => h("select", { "aria-label": `Role of ${m.email}`, onchange: (e) => change(m, e.target.value) }, ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r))) },
          { key: "remove", label: "", cell: (m) => h("button", { type: "button", "aria-label": `Remove ${m.email}`, onclick: () => api(`/v1/projects/${projectId}/members/${m.user_id}`, { method: "DELETE" }).then(redraw, (e) => mount(message, failure(e))) }, "Remove") },
        ],
        rows,
      ),
      h(
        "form",
        {
          class: "row",
          onsubmit: (e) => {
            e.preventDefault();
            api(`/v1/projects/${projectId}/members`, { method: "POST", body: { email: email.value, role: role.value } }).then(redraw, (err) => mount(message, failure(err)));
          },
        },
        h("div", { class: "grow" }, h("label", { for: "member-email" }, "Add by email"), email),
        h("div", {}, h("label", { for: "member-role" }, "Role"), role),
        h("button", { class: "primary", type: "submit" }, "Add"),
      ),
      message,
    ];
  });
  const webhooks = section("Webhooks", async (redraw) => {
    const rows = (await api(`/v1/projects/${projectId}/webhooks`)).items; // bounded: one page
    const url = h("input", { id: "hook-url", type: "url", required: true, placeholder: "https://example.com/bem" });
    const message = h("div", { role: "alert" });
    return [
      rows.length
        ? table([{ key: "url", label: "URL" }, { key: "kinds", label: "Events", cell: (w) => w.kinds.join(", ") || "all" }, { key: "active", label: "Active", cell: (w) => (w.active ? "yes" : "no") }, { key: "delete", label: "", cell: (w) => h("button", { type: "button", "aria-label": `Delete ${w.url}`, onclick: () => api(`/v1/projects/${projectId}/webhooks/${w.id}`, { method: "DELETE" }).then(redraw, (e) => mount(message, failure(e))) }, "Delete") }], rows)
        : h("p", { class: "muted" }, "No webhooks."),
      h(
        "form",
        {
          class: "row",
          onsubmit: async (e) => {
            e.preventDefault();
            try {
              const made = await api(`/v1/projects/${projectId}/webhooks`, { method: "POST", body: { url: url.value } });
              await redraw();
              webhooks.append(secretShown("Signing secret", made.secret));
            } catch (error) {
              mount(message, failure(error));
            }
          },
        },
        h("div", { class: "grow" }, h("label", { for: "hook-url" }, "Send every event to"), url),
        h("button", { class: "primary", type: "submit" }, "Add webhook"),
      ),
      message,
    ];
  });
  const tokens = section("Your API tokens for this project", async (redraw) => {
    const rows = (await api("/v1/me/tokens")).filter((t) => t.project_id === projectId);
    const name = h("input", { id: "token-name", required: true, maxlength: "255" });
    const boxes = SCOPES.map((scope) => h("label", {}, h("input", { type: "checkbox", value: scope, checked: scope === "projects:read" }), ` ${scope}`));
    const message = h("div", { role: "alert" });
    return [
      rows.length
        ? table([{ key: "name" }, { key: "display_prefix", label: "Starts with" }, { key: "scopes", cell: (t) => t.scopes.join(", ") }, { key: "last_used_at", label: "Last used", cell: (t) => when(t.last_used_at) }, { key: "revoke", label: "", cell: (t) => h("button", { type: "button", "aria-label": `Revoke ${t.name}`, onclick: () => api(`/v1/me/tokens/${t.id}`, { method: "DELETE" }).then(redraw, (e) => mount(message, failure(e))) }, "Revoke") }], rows)
        : h("p", { class: "muted" }, "No tokens bound to this project."),
      h(
        "form",
        {
          class: "row",
          onsubmit: async (e) => {
            e.preventDefault();
            const scopes = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
            try {
              const made = await api("/v1/me/tokens", { method: "POST", body: { name: name.value, scopes, project_id: projectId } });
              await redraw();
              tokens.append(secretShown("Token", made.token));
            } catch (error) {
              mount(message, failure(error));
            }
          },
        },
        h("div", { class: "grow" }, h("label", { for: "token-name" }, "New token's name"), name),
        h("fieldset", {}, h("legend", {}, "Scopes"), boxes),
        h("button", { class: "primary", type: "submit" }, "Create token"),
      ),
      message,
    ];
  });
  mount(main, h("h1", {}, `${project.name} — settings`), members, webhooks, tokens);
}

// An element document as dotted paths to its values (properties.Pset_WallCommon.FireRating),
// lists kept whole: what a diff compares field by field.
function flatten(doc, prefix = "", out = new Map()) {
  for (const [key, value] of Object.entries(doc)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) flatten(value, path, out);
    else out.set(path, value);
  }
  return out;
}

// ---------------------------------------------------------------- a version

const TABS = [
  ["elements", "Elements"],
  ["tree", "Spatial tree"],
  ["takeoff", "Takeoff"],
  ["diff", "Diff"],
  ["3d", "3D"],
];

async function versionPage(versionId, tab = "elements", rest = []) {
  const version = await api(`/v1/versions/${versionId}`);
  const model = await api(`/v1/models/${version.model_id}`);
  const project = await api(`/v1/projects/${model.project_id}`);
  crumb(["Projects", "#/"], [project.name, `#/projects/${project.id}`], [model.name, `#/models/${model.id}`], [`Version ${version.seq ?? ""}`]);
  const body = h("div", {});
  const [storeys, members, user] = await Promise.all([
    api(`/v1/versions/${versionId}/takeoff`, { params: { group_by: "storey" } }).catch(() => null),
    all(`/v1/projects/${project.id}/members`).catch(() => []),
    whoAmI().catch(() => null),
  ]);
  // Members by email; an admin (who need not be a member) is at least told it was them.
  const uploader = members.find((m) => m.user_id === version.created_by) || (user?.id === version.created_by ? user : null);
  mount(
    main,
    h("h1", {}, `${model.name} — version ${version.seq ?? ""}`),
    summary(version, storeys?.rows || [], uploader ? uploader.email : version.created_by),
    h("nav", { class: "tabs", "aria-label": "Version views" }, TABS.map(([key, label]) => h("a", { href: `#/versions/${versionId}/${key}`, "aria-current": key === tab ? "page" : null }, label))),
    body,
  );
  const pages = { elements: elementsTab, tree: treeTab, takeoff: takeoffTab, diff: diffTab, "3d": viewerTab };
  await (pages[tab] || elementsTab)(body, version, rest, storeys?.rows || []);
}

function summary(version, storeys, uploader) {
  const byClass = Object.entries(version.stats?.by_class || {}).sort((a, b) => b[1] - a[1]);
  const units = Object.entries(version.units || {}).map(([k, u]) => `${k}: ${u.unit ?? "—"}`).join(", ");
  return h(
    "details",
    { class: "panel" },
    h("summary", {}, `${number(version.element_count)} elements · ${version.source_name || version.source_format} · ${uploader || "—"} · ${when(version.created_at)}`),
    h("p", {}, version.message || ""),
    h("p", { class: "muted" }, `Schema ${version.source_schema || "—"}; units ${units || "—"}; uploaded by ${uploader || "—"}`),
    h(
      "div",
      { class: "split" },
      table([{ key: 0, label: "Class" }, { key: 1, label: "Elements", num: true }], byClass),
      table([{ key: "storey", label: "Storey", cell: (r) => r.storey ?? "(no storey)" }, { key: "count", label: "Elements", num: true }], storeys),
    ),
  );
}

function inspector(panel, versionId) {
  return async (globalId) => {
    if (!globalId) return;
    mount(panel, h("p", { class: "muted" }, "Loading…"));
    try {
      const e = await api(`/v1/versions/${versionId}/elements/${encodeURIComponent(globalId)}`);
      const scalar = ["global_id", "ifc_class", "predefined_type", "name", "description", "object_type", "tag"].map((k) => [k, e[k]]);
      const attrs = Object.entries(e.attributes || {});
      const ref = (r) => (r ? `${r.name || ""} (${r.ifc_class})` : "—");
      const neighbours = h("section", { "aria-label": "Neighbours" });
      const sets = (title, groups) =>
        Object.entries(groups || {}).map(([name, values]) =>
          h("section", {}, h("h3", {}, `${title}: ${name}`), table([{ key: 0, label: "Name" }, { key: 1, label: "Value", cell: (r) => (typeof r[1] === "number" ? number(r[1]) : JSON.stringify(r[1])) }], Object.entries(values))),
        );
      mount(
        panel,
        h("h2", {}, e.name || e.global_id),
        table([{ key: 0, label: "Attribute" }, { key: 1, label: "Value" }], [...scalar, ...attrs].filter(([, v]) => v !== null && v !== undefined)),
        h("h3", {}, "Relations"),
        table([{ key: 0, label: "Relation" }, { key: 1, label: "Element" }], [["Type", ref(e.type)], ["Container", ref(e.container)], ["Part of", ref(e.parent)]]),
        e.materials?.length ? [h("h3", {}, "Materials"), table([{ key: "name" }, { key: "category" }, { key: "layer_thickness", label: "Layer (m)", num: true }, { key: "fraction", num: true }], e.materials)] : null,
        sets("Properties", e.properties),
        sets("Quantities", e.quantities),
        e.classification?.length ? [h("h3", {}, "Classification"), table([{ key: "system" }, { key: "identification" }, { key: "name" }], e.classification)] : null,
        neighbours,
      );
      const graph = await api(`/v1/versions/${versionId}/elements/${encodeURIComponent(globalId)}/relations`);
      const named = new Map(graph.nodes.map((n) => [n.global_id, n]));
      const rows = graph.edges.map((edge) => {
        const out = edge.source === globalId;
        return { kind: edge.kind, direction: out ? "→" : "←", other: named.get(out ? edge.target : edge.source) };
      });
      const open = inspector(panel, versionId);
      mount(
        neighbours,
        h("h3", {}, "Neighbours"),
        rows.length
          ? table([{ key: "kind", label: "Relation" }, { key: "direction", label: "" }, { key: "other", label: "Element", cell: (r) => `${r.other?.name || r.other?.global_id} (${r.other?.ifc_class})` }], rows, (r) => open(r.other.global_id))
          : h("p", { class: "muted" }, "No relations."),
      );
    } catch (error) {
      mount(panel, failure(error));
    }
  };
}

// A selector box whose server error is shown at its position.
function selectorField(id, value) {
  const input = h("input", { id, value: value || "", placeholder: "IfcWall, Pset_WallCommon.FireRating=REI90", spellcheck: "false", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert" });
  const show = (err) => {
    const p = err?.problem;
    if (p && typeof p.position === "number") {
      const text = p.selector ?? input.value;
      mount(error, p.detail, h("br"), h("code", { class: "selector" }, text.slice(0, p.position), h("span", { class: "caret" }, text.slice(p.position, p.position + 1) || " "), text.slice(p.position + 1)));
      input.setAttribute("aria-invalid", "true");
      input.focus();
      input.setSelectionRange(p.position, p.position + 1);
    } else if (err) {
      mount(error, problemText(err));
    } else {
      mount(error);
      input.removeAttribute("aria-invalid");
    }
  };
  return { input, error, show };
}

async function elementsTab(body, version) {
  const selector = selectorField("selector");
  const fields = h("input", { id: "fields", value: "name,ifc_class,container", spellcheck: "false" });
  const sort = h("select", { id: "sort" }, ["global_id", "name", "ifc_class", "-name"].map((s) => h("option", { value: s }, s)));
  const count = h("p", { role: "status", class: "count" });
  const results = h("div", {});
  const panel = h("aside", { class: "panel", "aria-label": "Inspector" }, h("p", { class: "muted" }, "Choose an element to inspect it."));
  const inspect = inspector(panel, version.id);
  let cursors = [null];
  const run = async (page = 0) => {
    selector.show(null);
    const q = selector.input.value.trim() || undefined;
    try {
      const [found, totals] = await Promise.all([
        api(`/v1/versions/${version.id}/elements`, { params: { q, fields: fields.value, sort: sort.value, limit: PAGE, cursor: cursors[page] } }),
        page === 0 ? api(`/v1/versions/${version.id}/takeoff`, { params: { q, group_by: "class" } }) : null,
      ]);
      if (totals) count.textContent = `${number(totals.totals.count)} elements match`;
      cursors = cursors.slice(0, page + 1);
      if (found.next_cursor) cursors.push(found.next_cursor);
      const columns = ["global_id", ...fields.value.split(",").map((f) => f.trim()).filter((f) => f && f !== "global_id")];
      const cell = (key) => (row) => {
        const value = key.split(".").reduce((v, part) => v?.[part], row);
        if (value && typeof value === "object") return value.name ?? JSON.stringify(value);
        return typeof value === "number" ? number(value) : value ?? "";
      };
      mount(
        results,
        table(columns.map((key) => ({ key, label: key, cell: cell(key) })), found.items, (row) => inspect(row.global_id)),
        h("div", { class: "row" }, h("button", { type: "button", disabled: page === 0, onclick: () => run(page - 1) }, "Previous"), h("span", { class: "muted" }, `Page ${page + 1}`), h("button", { type: "button", disabled: !found.next_cursor, onclick: () => run(page + 1) }, "Next")),
      );
    } catch (error) {
      selector.show(error);
    }
  };
  const form = h(
    "form",
    { class: "row", onsubmit: (e) => { e.preventDefault(); cursors = [null]; run(0); } },
    h("div", { class: "grow" }, h("label", { for: "selector" }, "Selector"), selector.input),
    h("div", {}, h("label", { for: "fields" }, "Columns (fields=)"), fields),
    h("div", {}, h("label", { for: "sort" }, "Sort"), sort),
    h("button", { class: "primary", type: "submit" }, "Run"),
  );
  mount(body, form, selector.error, count, h("div", { class: "split" }, results, panel));
  await run(0);
}

async function treeTab(body, version) {
  const tree = await api(`/v1/versions/${version.id}/tree`);
  const panel = h("aside", { class: "panel", "aria-label": "Inspector" });
  const inspect = inspector(panel, version.id);
  const branch = (nodes) =>
    h(
      "ul",
      { class: "tree", role: "group" },
      nodes.map((n) => {
        const children = n.children?.length ? branch(n.children) : null;
        if (children) children.hidden = n.ifc_class === "IfcBuildingStorey" || n.ifc_class === "IfcSpace";
        const toggle = children ? h("button", { type: "button", "aria-expanded": String(!children.hidden), onclick: (e) => { children.hidden = !children.hidden; e.currentTarget.setAttribute("aria-expanded", String(!children.hidden)); } }, children.hidden ? "▸" : "▾") : h("span", { "aria-hidden": "true" }, "·");
        return h("li", { role: "treeitem" }, toggle, " ", h("button", { type: "button", onclick: () => inspect(n.global_id) }, `${n.name || n.global_id} `, h("span", { class: "muted" }, `${n.ifc_class}${n.element_count ? ` · ${n.element_count}` : ""}`)), children);
      }),
    );
  mount(body, h("div", { class: "split" }, h("nav", { "aria-label": "Spatial tree", role: "tree" }, branch(tree.roots)), panel));
}

function barChart(rows, label, value) {
  const shown = rows.slice(0, 30);
  const max = Math.max(...shown.map(value), 0) || 1;
  const rowHeight = 22;
  const width = 640;
  const left = 200;
  return h(
    "figure",
    {},
    svg("svg", { class: "chart", viewBox: `0 0 ${width} ${shown.length * rowHeight + 10}`, width: "100%", role: "img", "aria-label": "Takeoff chart" },
      shown.flatMap((row, i) => {
        const w = ((width - left - 80) * value(row)) / max;
        return [
          svg("text", { x: left - 6, y: i * rowHeight + 16, "text-anchor": "end" }, String(label(row)).slice(0, 28)),
          svg("rect", { x: left, y: i * rowHeight + 4, width: Math.max(w, 1), height: rowHeight - 6 }),
          svg("text", { x: left + w + 4, y: i * rowHeight + 16 }, number(value(row))),
        ];
      }),
    ),
    rows.length > shown.length ? h("figcaption", { class: "muted" }, `The first ${shown.length} of ${rows.length} groups.`) : null,
  );
}

const MEASURES = [
  "", "Qto_WallBaseQuantities.NetVolume", "Qto_WallBaseQuantities.NetSideArea", "Qto_SlabBaseQuantities.NetVolume",
  "Qto_SlabBaseQuantities.NetArea", "Qto_ColumnBaseQuantities.NetVolume", "Qto_BeamBaseQuantities.NetVolume",
  "Qto_SpaceBaseQuantities.NetFloorArea",
];

async function takeoffTab(body, version) {
  const selector = selectorField("takeoff-selector");
  const groupBy = h("select", { id: "group-by" }, ["class", "storey", "type", "material", "class,storey"].map((g) => h("option", { value: g }, g)));
  const measures = h("input", { id: "measures", list: "measure-list", placeholder: "Qto_WallBaseQuantities.NetVolume", spellcheck: "false" });
  const results = h("div", {});
  const params = () => ({ q: selector.input.value.trim() || undefined, group_by: groupBy.value, measures: measures.value.trim() || undefined });
  const run = async () => {
    selector.show(null);
    try {
      const takeoff = await api(`/v1/versions/${version.id}/takeoff`, { params: params() });
      const groups = takeoff.columns.filter((c) => c.kind === "group").map((c) => c.name);
      const numbers = takeoff.columns.filter((c) => c.kind !== "group").map((c) => c.name);
      const charted = numbers.find((n) => n !== "count") || "count";
      mount(
        results,
        barChart(takeoff.rows, (r) => groups.map((g) => r[g] ?? "—").join(" · "), (r) => r[charted] || 0),
        table(takeoff.columns.map((c) => ({ key: c.name, num: c.kind !== "group" })), takeoff.rows),
        h("p", {}, "Totals: ", numbers.map((n) => `${n} ${number(takeoff.totals[n])}`).join(", ")),
        takeoff.notes?.length ? h("ul", { class: "muted" }, takeoff.notes.map((n) => h("li", {}, typeof n === "string" ? n : JSON.stringify(n)))) : null,
      );
    } catch (error) {
      selector.show(error);
    }
  };
  const file = (format) => () => download(`/v1/versions/${version.id}/takeoff`, { ...params(), format }, `takeoff.${format}`).catch((e) => say(problemText(e)));
  mount(
    body,
    h("datalist", { id: "measure-list" }, MEASURES.map((m) => h("option", { value: m }))),
    h(
      "form",
      { class: "row", onsubmit: (e) => { e.preventDefault(); run(); } },
      h("div", { class: "grow" }, h("label", { for: "takeoff-selector" }, "Selector"), selector.input),
      h("div", {}, h("label", { for: "group-by" }, "Group by"), groupBy),
      h("div", { class: "grow" }, h("label", { for: "measures" }, "Measures"), measures),
      h("button", { class: "primary", type: "submit" }, "Take off"),
      h("button", { type: "button", onclick: file("csv") }, "CSV"),
      h("button", { type: "button", onclick: file("xlsx") }, "XLSX"),
    ),
    selector.error,
    results,
  );
  await run();
}

async function diffTab(body, version, [other]) {
  const versions = (await api(`/v1/models/${version.model_id}/versions`, { params: { limit: 100 } })).items.filter((v) => v.id !== version.id && v.status === "ready");
  const choose = h("select", { id: "other", onchange: (e) => { location.hash = `#/versions/${version.id}/diff/${e.target.value}`; } }, h("option", { value: "" }, "Compare with…"), versions.map((v) => h("option", { value: v.id, selected: v.id === other }, `Version ${v.seq} — ${v.message || v.source_name || ""}`)));
  const results = h("div", {});
  mount(body, h("div", { class: "row" }, h("div", {}, h("label", { for: "other" }, "Other version"), choose)), results);
  if (!other) {
    mount(results, h("p", { class: "muted" }, versions.length ? "Choose a version to compare with." : "This model has no other version."));
    return;
  }
  const panel = h("aside", { class: "panel", "aria-label": "Both sides" });
  let cursor = null;
  const list = h("tbody", {});
  const more = h("button", { type: "button" }, "More");
  const page = async () => {
    const diff = await api(`/v1/versions/${other}/diff/${version.id}`, { params: { limit: PAGE, cursor } });
    for (const change of diff.items) {
      const gid = change.global_id;
      list.append(h("tr", { tabindex: "0", onclick: () => both(gid), onkeydown: (e) => e.key === "Enter" && both(gid) }, h("td", {}, change.kind || change.change), h("td", {}, gid), h("td", {}, change.name ?? change.after?.name ?? change.before?.name ?? "")));
    }
    cursor = diff.next_cursor;
    more.hidden = !cursor;
    return diff;
  };
  const both = async (gid) => {
    const side = async (vid) => api(`/v1/versions/${vid}/elements/${encodeURIComponent(gid)}`).catch(() => null);
    const [before, after] = await Promise.all([side(other), side(version.id)]);
    const was = flatten(before || {});
    const now = flatten(after || {});
    const fields = [...new Set([...was.keys(), ...now.keys()])].sort();
    const show = (v) => (v === undefined ? "—" : typeof v === "number" ? number(v) : JSON.stringify(v));
    const rows = fields.filter((f) => JSON.stringify(was.get(f)) !== JSON.stringify(now.get(f))).map((f) => ({ field: f, before: show(was.get(f)), after: show(now.get(f)) }));
    mount(
      panel,
      h("h2", {}, (after || before)?.name || gid),
      h("p", { class: "muted" }, before && after ? `${rows.length} fields differ` : before ? "Removed in this version" : "Added in this version"),
      table([{ key: "field", label: "Field" }, { key: "before", label: "Before" }, { key: "after", label: "After" }], rows),
    );
  };
  more.onclick = page;
  const first = await page();
  const counts = first.summary || {};
  mount(
    results,
    h("p", { role: "status", class: "count" }, Object.entries(counts).map(([k, v]) => `${k} ${number(v)}`).join(" · ")),
    h("p", {}, h("a", { href: `#/versions/${version.id}/3d?since=${other}` }, "Show the changes in 3D")),
    h("div", { class: "split" }, h("div", {}, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Change"), h("th", {}, "GlobalId"), h("th", {}, "Name"))), list), more), panel),
  );
}

const HIT = [0.04, 0.41, 0.85, 1];
const DIFF_COLOURS = { added: [0.18, 0.64, 0.31, 1], removed: [0.81, 0.13, 0.18, 1], changed: [0.75, 0.53, 0, 1] };

async function viewerTab(body, version, _rest, storeyRows) {
  const canvas = h("canvas", { tabindex: "0", "aria-label": "3D view: drag to orbit, shift-drag to pan, wheel or +/- to zoom, arrows to orbit, Home to frame" });
  const status = h("p", { role: "status", class: "muted" }, "Loading geometry…");
  const panel = h("aside", { class: "panel", "aria-label": "Inspector" }, h("p", { class: "muted" }, "Click an element to inspect it."));
  const inspect = inspector(panel, version.id);
  const selector = selectorField("viewer-selector");
  const isolate = h("input", { id: "isolate", type: "checkbox" });
  const classes = Object.keys(version.stats?.by_class || {}).sort();
  const hideClass = h("select", { id: "hide-class", multiple: true, size: "4" }, classes.map((c) => h("option", { value: c }, c)));
  const storeys = storeyRows.map((r) => r.storey).filter(Boolean);
  const hideStorey = h("select", { id: "hide-storey", multiple: true, size: "4" }, storeys.map((c) => h("option", { value: c }, c)));
  mount(
    body,
    h(
      "form",
      { class: "row", onsubmit: (e) => { e.preventDefault(); highlight(); } },
      h("div", { class: "grow" }, h("label", { for: "viewer-selector" }, "Colour what a selector matches"), selector.input),
      h("div", {}, h("label", { for: "isolate" }, "Isolate"), isolate),
      h("button", { class: "primary", type: "submit" }, "Show"),
      h("div", {}, h("label", { for: "hide-class" }, "Hide classes"), hideClass),
      h("div", {}, h("label", { for: "hide-storey" }, "Hide storeys"), hideStorey),
    ),
    selector.error,
    h("div", { class: "split" }, h("div", { class: "viewer" }, canvas, status), panel),
  );
  const state = await api(`/v1/versions/${version.id}/geometry`);
  if (state.status !== "ready") {
    status.textContent = state.status === "none" ? "This version has no geometry." : `Geometry ${state.status}${state.error ? `: ${state.error.detail}` : ""}.`;
    return;
  }
  const viewer = new Viewer(canvas, { onpick: (gid) => inspect(gid) });
  const glb = await (await api(state.url, { raw: true })).arrayBuffer();
  const drawn = viewer.load(glb);
  status.textContent = `${number(drawn)} elements with shapes.`;
  canvas.dataset.loaded = "true";
  let facts = null; // global_id -> {ifc_class, storey}, fetched the first time it is needed
  let matched = null;
  const hidden = () => {
    const out = new Set();
    const classesOff = new Set([...hideClass.selectedOptions].map((o) => o.value));
    const storeysOff = new Set([...hideStorey.selectedOptions].map((o) => o.value));
    for (const e of viewer.elements) {
      const f = facts?.get(e.guid);
      if ((isolate.checked && matched && !matched.has(e.guid)) || (f && (classesOff.has(f.ifc_class) || storeysOff.has(f.storey)))) out.add(e.guid);
    }
    return out;
  };
  const hideChosen = async () => {
    facts ??= new Map((await all(`/v1/versions/${version.id}/elements`, { fields: "ifc_class,container" })).map((e) => [e.global_id, { ifc_class: e.ifc_class, storey: e.container?.name }]));
    viewer.hide(hidden());
  };
  const highlight = async () => {
    selector.show(null);
    const q = selector.input.value.trim();
    try {
      matched = q ? new Set((await all(`/v1/versions/${version.id}/elements`, { q, fields: "global_id" }, VIEWER_MATCH_LIMIT)).map((e) => e.global_id)) : null;
      viewer.colour(matched ? [...matched].map((g) => [g, HIT]) : []);
      viewer.hide(hidden());
      status.textContent = matched ? `${number(matched.size)} elements match.` : `${number(drawn)} elements with shapes.`;
    } catch (error) {
      selector.show(error);
    }
  };
  hideClass.onchange = hideChosen;
  hideStorey.onchange = hideChosen;
  isolate.onchange = () => viewer.hide(hidden());
  // #/versions/{id}/3d with a diff in the URL's query: colour what changed since that version.
  const since = new URLSearchParams(location.hash.split("?")[1] || "").get("since");
  if (since) {
    const tints = [];
    let cursor;
    do {
      const diff = await api(`/v1/versions/${since}/diff/${version.id}`, { params: { limit: 1000, cursor } });
      for (const c of diff.items) if (DIFF_COLOURS[c.kind || c.change]) tints.push([c.global_id, DIFF_COLOURS[c.kind || c.change]]);
      cursor = diff.next_cursor;
    } while (cursor);
    viewer.colour(tints);
    mount(status, h("span", { class: "legend" }, Object.keys(DIFF_COLOURS).map((k) => h("span", {}, h("span", { class: `swatch ${k}` }), k))));
  }
}

// ---------------------------------------------------------------- routing

const ROUTES = [
  [/^#\/signin$/, signinPage],
  [/^#\/?$/, projectsPage],
  [/^#\/projects\/([\w-]+)$/, projectPage],
  [/^#\/projects\/([\w-]+)\/settings$/, settingsPage],
  [/^#\/models\/([\w-]+)$/, modelPage],
  [/^#\/jobs\/([\w-]+)$/, jobPage],
  [/^#\/versions\/([\w-]+)(?:\/(\w+))?(?:\/([\w-]+))?(?:\?.*)?$/, (id, tab, other) => versionPage(id, tab, [other])],
];

async function route() {
  for (const stop of leave) stop();
  leave = [];
  const hash = location.hash || "#/";
  const who = document.getElementById("who");
  const out = document.getElementById("signout");
  if (!session() && hash !== "#/signin") {
    location.hash = "#/signin";
    return;
  }
  out.hidden = !session();
  for (const [pattern, page] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    try {
      await page(...match.slice(1));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        await forget();
        location.hash = "#/signin";
        return;
      }
      mount(main, failure(error));
    }
    main.focus({ preventScroll: true });
    if (session() && !who.textContent) whoAmI().then((user) => { who.textContent = user.email; }).catch(() => null);
    return;
  }
  mount(main, h("p", {}, "Nothing here. ", h("a", { href: "#/" }, "Projects")));
}

// Signing out (or a session the server no longer takes): nothing of the user stays here.
async function forget() {
  await signOut();
  me = null;
  document.getElementById("who").textContent = "";
}

document.getElementById("signout").addEventListener("click", async () => {
  await forget();
  location.hash = "#/signin";
});
window.addEventListener("hashchange", route);
route();

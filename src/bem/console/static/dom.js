// Building the page from data without innerHTML: text is always text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  append(el, children);
  return el;
}

export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let hide;
export function say(message) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.classList.add("shown");
  clearTimeout(hide);
  hide = setTimeout(() => status.classList.remove("shown"), 3000);
}

export function number(value) {
  if (typeof value !== "number") return value ?? "";
  return value.toLocaleString("en", { maximumFractionDigits: 3 });
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// A table of rows (objects) by columns [{key, label, num, cell(row)}]; onpick(row) on a row
// click or Enter makes rows focusable.
export function table(columns, rows, onpick) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label ?? c.key)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          onpick
            ? {
                tabindex: "0",
                onclick: () => onpick(row),
                onkeydown: (e) => { if (e.key === "Enter") onpick(row); },
              }
            : {},
          columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell ? c.cell(row) : (c.num ? number(row[c.key]) : row[c.key] ?? ""))),
        ),
      ),
    ),
  );
}

export function problemText(error) {
  return error?.problem?.detail || error?.message || String(error);
}

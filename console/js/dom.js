// Building the page from data without ever parsing data as markup: every value is
// written with createTextNode or setAttribute, never with innerHTML. Records hold
// whatever producers sent; the Content-Security-Policy is the second line of defence.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'on') {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (name === 'value' && 'value' in el) {
      el.value = String(value);
    } else if (name === 'checked' || name === 'disabled' || name === 'selected') {
      el[name] = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, anything else as text; arrays are flattened. */
export function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

/** An element: h('td', {class: 'num'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const numberFormat = new Intl.NumberFormat('en-US');

export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return numberFormat.format(n);
}

export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return '—';
  if (perSecond >= 100) return `${numberFormat.format(Math.round(perSecond))}/s`;
  return `${perSecond.toFixed(1)}/s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function fmtAge(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
  const both = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
  const m = Math.floor(s / 60);
  if (m < 60) return both(m, 'min', Math.floor(s % 60), 's');
  const hours = Math.floor(m / 60);
  if (hours < 48) return both(hours, 'h', m % 60, 'min');
  return both(Math.floor(hours / 24), 'd', hours % 24, 'h');
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** A time in milliseconds since 1970 as local date and time (to the millisecond unless `seconds`). */
export function fmtTime(ms, { seconds = false } = {}) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${seconds ? '' : `.${pad(d.getMilliseconds(), 3)}`}`;
}

/** A badge: a short word with a colour by its kind (ok, warn, bad, info, muted). */
export function badge(text, kind = 'muted', attrs = {}) {
  return h('span', { ...attrs, class: `badge badge-${kind}` }, text);
}

/**
 * A table from column headings and rows of cells; `numeric` names right-aligned columns,
 * `nowrap` columns that keep to one line, `wide` columns of long values that may break
 * anywhere (and so give way to the others).
 */
export function table(headings, rows, { numeric = [], nowrap = [], wide = [], empty = 'Nothing yet.', attrs = {} } = {}) {
  const cls = (i) => [numeric.includes(i) ? 'num' : '', nowrap.includes(i) ? 'nowrap' : '', wide.includes(i) ? 'wide' : '']
    .join(' ').trim() || null;
  const head = h('thead', {}, h('tr', {}, headings.map((heading, i) =>
    h('th', { class: cls(i) }, heading))));
  const body = h('tbody', {});
  if (rows.length === 0) {
    body.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: headings.length }, empty)));
  }
  for (const row of rows) {
    const cells = row.cells || row;
    const tr = h('tr', row.attrs || {}, cells.map((cell, i) =>
      h('td', { class: cls(i) }, cell)));
    body.appendChild(tr);
  }
  return h('div', { class: 'table-wrap' }, h('table', attrs, head, body));
}

/** A card with a label and a big value. */
export function stat(label, value, { name, hint, kind } = {}) {
  return h('div', { class: `stat${kind ? ` stat-${kind}` : ''}`, dataset: name ? { stat: name } : undefined },
    h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value' }, value),
    hint ? h('div', { class: 'stat-hint' }, hint) : null);
}

/** A titled section of a page. */
export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', {}, title), ...children);
}

/** A definition list of [label, value] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([label, value]) =>
    [h('dt', {}, label), h('dd', {}, value)]));
}

export function link(href, text) {
  return h('a', { href }, text);
}

/** A progress bar: `done` of `total`. */
export function progress(done, total) {
  const ratio = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const bar = h('div', { class: 'bar-fill' });
  bar.style.width = `${(ratio * 100).toFixed(1)}%`;
  return h('div', { class: 'bar', title: `${(ratio * 100).toFixed(1)} %` }, bar);
}

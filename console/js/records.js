// How a record's key, value and headers are shown. The API gives a value as JSON when
// it was produced as JSON, and as {"base64": "..."} for other bytes; keys and header
// values are strings, or {"base64": "..."} when they are not UTF-8.
import { h, fmtNum, fmtTime, table } from './dom.js';

const PREVIEW_CHARS = 120;

/** True for the API's form of bytes that are not JSON or not UTF-8. */
export function isBytes(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    && Object.keys(v).length === 1 && typeof v.base64 === 'string';
}

export function base64Bytes(b64) {
  try {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return new Uint8Array();
  }
}

function hexOf(bytes, max = bytes.length) {
  return Array.from(bytes.slice(0, max), (b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** A hex dump: offset, 16 bytes in hex, the printable ones as text. */
export function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const row = bytes.slice(at, at + 16);
    const hex = hexOf(row).padEnd(47, ' ');
    const text = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${at.toString(16).padStart(8, '0')}  ${hex}  |${text}|`);
  }
  return lines.join('\n');
}

/** One line of text for a table cell. */
export function preview(v) {
  let text;
  if (v === null || v === undefined) return h('span', { class: 'muted' }, 'null');
  if (isBytes(v)) {
    const bytes = base64Bytes(v.base64);
    text = `${fmtNum(bytes.length)} bytes: ${hexOf(bytes, 24)}${bytes.length > 24 ? ' …' : ''}`;
    return h('span', { class: 'bytes' }, text);
  }
  // One line, with a space after each comma and colon so that it can wrap.
  text = typeof v === 'string' ? v : JSON.stringify(v, null, 1).replace(/\n\s*/g, ' ');
  if (text.length > PREVIEW_CHARS) text = `${text.slice(0, PREVIEW_CHARS)}…`;
  return h('span', { class: 'mono' }, text);
}

/** A key or header value: text, or bytes as hex. */
export function textOrBytes(v) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, 'null');
  if (isBytes(v)) return h('span', { class: 'bytes' }, `hex ${hexOf(base64Bytes(v.base64))}`);
  return h('span', { class: 'mono' }, String(v));
}

const JSON_TOKEN = /("(?:[^"\\]|\\.)*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;

/** Pretty JSON with its tokens coloured: text nodes and spans, no markup parsing. */
export function prettyJson(value) {
  const text = JSON.stringify(value, null, 2);
  const pre = h('pre', { class: 'json' });
  let last = 0;
  for (const m of text.matchAll(JSON_TOKEN)) {
    if (m.index > last) pre.appendChild(document.createTextNode(text.slice(last, m.index)));
    let kind = 'number';
    if (m[1]) kind = m[2] ? 'key' : 'string';
    else if (m[3]) kind = 'literal';
    pre.appendChild(h('span', { class: `j-${kind}` }, m[1] || m[3] || m[4]));
    if (m[2]) pre.appendChild(document.createTextNode(m[2]));
    last = m.index + m[0].length;
  }
  pre.appendChild(document.createTextNode(text.slice(last)));
  return pre;
}

/** A value in full: pretty JSON, or bytes as a hex dump or base64 (a toggle). */
export function valueView(v) {
  if (!isBytes(v)) return h('div', { class: 'value-view', dataset: { kind: 'json' } }, prettyJson(v));
  const bytes = base64Bytes(v.base64);
  const out = h('pre', { class: 'hex' }, hexDump(bytes) || '(empty)');
  const show = (mode) => {
    out.textContent = mode === 'hex' ? (hexDump(bytes) || '(empty)') : v.base64;
    hexButton.classList.toggle('active', mode === 'hex');
    b64Button.classList.toggle('active', mode === 'base64');
  };
  const hexButton = h('button', { type: 'button', class: 'seg active', on: { click: () => show('hex') } }, 'Hex');
  const b64Button = h('button', { type: 'button', class: 'seg', on: { click: () => show('base64') } }, 'Base64');
  return h('div', { class: 'value-view', dataset: { kind: 'bytes' } },
    h('div', { class: 'segmented' }, h('span', { class: 'muted' }, `${fmtNum(bytes.length)} bytes`), hexButton, b64Button),
    out);
}

/** A record's headers as a table (a name given more than once lists each value). */
export function headersTable(headers) {
  const rows = [];
  for (const [name, value] of Object.entries(headers || {})) {
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) rows.push([h('span', { class: 'mono' }, name), textOrBytes(v)]);
  }
  return table(['Header', 'Value'], rows, { empty: 'No headers.' });
}

/** Everything about one record. */
export function recordDetail(record, title) {
  return h('div', { class: 'record-detail', dataset: { offset: record.offset } },
    h('div', { class: 'record-detail-head' },
      h('h3', {}, title),
      h('span', { class: 'muted' }, fmtTime(record.timestamp))),
    h('div', { class: 'field-label' }, 'Key'),
    h('div', { class: 'record-key' }, textOrBytes(record.key)),
    h('div', { class: 'field-label' }, 'Value'),
    valueView(record.value),
    h('div', { class: 'field-label' }, 'Headers'),
    headersTable(record.headers));
}

/** The text a record's search matches against: key, value and header values. */
export function searchText(record) {
  const parts = [record.key, record.value, record.headers].map((v) => {
    if (v === null || v === undefined) return '';
    return typeof v === 'string' ? v : JSON.stringify(v);
  });
  return parts.join('\n').toLowerCase();
}

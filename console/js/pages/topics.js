// Topics and partitions, and the record browser: records by offset or by time, with
// key, value and headers.
import { h, replace, stat, section, table, facts, link, fmtNum, fmtBytes, fmtRate, fmtAge, fmtTime } from '../dom.js';
import { api } from '../api.js';
import { sample, rateOf } from '../throughput.js';
import { preview, recordDetail, searchText } from '../records.js';

function storedRecords(t) {
  return t.partition_stats.reduce((m, p) => m + (p.latest - p.earliest), 0);
}

function size(t) {
  return t.partition_stats.reduce((m, p) => m + p.size_bytes, 0);
}

function retention(t) {
  const parts = [];
  if (t.retention_ms >= 0) parts.push(fmtAge(t.retention_ms));
  if (t.retention_bytes >= 0) parts.push(fmtBytes(t.retention_bytes));
  return parts.length ? parts.join(' or ') : 'forever';
}

function mountList(root) {
  const box = h('div', {});
  root.append(h('header', { class: 'page-head' }, h('h1', {}, 'Topics'),
    h('p', { class: 'muted' }, 'Every topic with its partitions\u2019 records and size on disk. Open one to browse its records.')),
    section('All topics', box));
  async function refresh() {
    const { topics } = await api.topics();
    sample(topics);
    replace(box, table(['Topic', 'Partitions', 'Records', 'End offsets', 'Size', 'Segments', 'Retention', 'Durability', 'In/s'],
      topics.map((t) => [
        link(`#/topics/${encodeURIComponent(t.name)}`, t.name),
        fmtNum(t.partitions),
        fmtNum(storedRecords(t)),
        fmtNum(t.partition_stats.reduce((m, p) => m + p.latest, 0)),
        fmtBytes(size(t)),
        fmtNum(t.partition_stats.reduce((m, p) => m + p.segments, 0)),
        retention(t),
        t.durability,
        fmtRate(rateOf(t.name)),
      ]), { numeric: [1, 2, 3, 4, 5, 8], empty: 'No topics yet. Create one with `ferry topic create` or POST /v1/topics.' }));
  }
  return { refresh, unmount() {} };
}

/** The record browser of one topic: a query form, a page of records, one in full. */
function browser(topicName, getTopic) {
  const partition = h('select', { name: 'partition', 'aria-label': 'Partition' });
  const from = h('select', { name: 'from', 'aria-label': 'Read from' },
    h('option', { value: 'newest' }, 'Newest'),
    h('option', { value: 'offset' }, 'Offset'),
    h('option', { value: 'time' }, 'Time'));
  const offset = h('input', { name: 'offset', type: 'number', min: 0, value: 0, 'aria-label': 'Offset', class: 'w-offset' });
  const time = h('input', { name: 'time', type: 'datetime-local', step: 1, 'aria-label': 'Time' });
  const max = h('select', { name: 'max', 'aria-label': 'Records per page' },
    [20, 50, 100, 500].map((n) => h('option', { value: n, selected: n === 50 }, `${n} records`)));
  const find = h('input', { name: 'find', type: 'search', placeholder: 'Find in key, value, headers', 'aria-label': 'Find', class: 'w-find' });
  const status = h('span', { class: 'muted browser-status' });
  const rows = h('div', {});
  const detail = h('div', { class: 'detail-box' }, h('p', { class: 'muted' }, 'Choose a record to see it in full.'));
  const older = h('button', { type: 'button', class: 'btn', disabled: true }, '\u2190 Older');
  const newer = h('button', { type: 'button', class: 'btn', disabled: true }, 'Newer \u2192');
  let page = { records: [], first: 0, next: 0, earliest: 0, latest: 0 };
  let selected = null;

  const showControls = () => {
    offset.hidden = from.value !== 'offset';
    time.hidden = from.value !== 'time';
  };
  from.addEventListener('change', showControls);
  showControls();

  function render() {
    const needle = find.value.trim().toLowerCase();
    const shown = needle ? page.records.filter((r) => searchText(r).includes(needle)) : page.records;
    replace(rows, table(['Offset', 'Time', 'Key', 'Value', 'Headers'],
      shown.map((r) => ({
        attrs: {
          class: `clickable${selected === r.offset ? ' selected' : ''}`,
          dataset: { offset: r.offset },
          tabindex: 0,
          on: {
            click: () => choose(r),
            keydown: (e) => { if (e.key === 'Enter') choose(r); },
          },
        },
        cells: [fmtNum(r.offset), fmtTime(r.timestamp, { seconds: true }), preview(r.key), preview(r.value), fmtNum(Object.keys(r.headers || {}).length)],
      })), { numeric: [0, 4], nowrap: [1], wide: [3], empty: needle ? 'No record on this page matches.' : 'No records here.', attrs: { class: 'records' } }));
    status.textContent = page.records.length
      ? `Partition ${partition.value}: offsets ${fmtNum(page.first)} to ${fmtNum(page.next - 1)} of ${fmtNum(page.earliest)}\u2013${fmtNum(page.latest - 1)}${needle ? ` · ${shown.length} match` : ''}`
      : `Partition ${partition.value}: ${fmtNum(page.latest - page.earliest)} records stored`;
    older.disabled = page.first <= page.earliest;
    newer.disabled = page.next >= page.latest;
  }

  function choose(r) {
    selected = r.offset;
    replace(detail, recordDetail(r, `Offset ${fmtNum(r.offset)} · partition ${partition.value}`));
    render();
  }

  async function load(start) {
    const p = Number(partition.value);
    const n = Number(max.value);
    const topic = getTopic();
    const stats = topic && topic.partition_stats.find((s) => s.partition === p);
    let at = start;
    if (at === undefined) {
      if (from.value === 'newest') at = stats ? Math.max(stats.earliest, stats.latest - n) : 0;
      else if (from.value === 'offset') at = Number(offset.value || 0);
      else {
        const ms = time.value ? new Date(time.value).getTime() : Date.now();
        at = (await api.offsetForTime(topicName, p, ms)).offset;
      }
    }
    if (stats) at = Math.min(Math.max(at, stats.earliest), stats.latest);
    const answer = await api.read(topicName, p, at, n);
    page = { records: answer.records, first: at, next: answer.next_offset, earliest: answer.earliest, latest: answer.latest };
    selected = null;
    replace(detail, h('p', { class: 'muted' }, 'Choose a record to see it in full.'));
    render();
  }

  const run = (start) => load(start).catch((e) => {
    status.textContent = `Could not read: ${e.message}`;
  });
  const form = h('form', { class: 'toolbar', on: { submit: (e) => { e.preventDefault(); run(); } } },
    h('label', {}, 'Partition ', partition), h('label', {}, 'From ', from), offset, time, max,
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Read'), find);
  find.addEventListener('input', render);
  older.addEventListener('click', () => run(Math.max(page.earliest, page.first - Number(max.value))));
  newer.addEventListener('click', () => run(page.next));

  const el = h('div', { class: 'browser' }, form,
    h('div', { class: 'browser-body' },
      h('div', { class: 'browser-list' }, rows, h('div', { class: 'pager' }, older, status, newer)),
      detail));

  let loaded = false;
  return {
    el,
    /** Fills the partition list; reads the first page once. */
    update(topic) {
      if (partition.options.length !== topic.partitions) {
        const keep = partition.value;
        replace(partition, topic.partition_stats.map((p) => h('option', { value: p.partition }, String(p.partition))));
        if (keep) partition.value = keep;
      }
      if (!loaded) {
        loaded = true;
        run();
      }
    },
    choosePartition(p) {
      partition.value = String(p);
      from.value = 'newest';
      showControls();
      run();
    },
  };
}

function mountDetail(root, name) {
  const cards = h('div', { class: 'stats' });
  const settings = h('div', {});
  const partitions = h('div', {});
  let topic = null;
  const recordBrowser = browser(name, () => topic);
  root.append(
    h('header', { class: 'page-head' },
      h('div', { class: 'crumbs' }, link('#/topics', 'Topics'), ' / '),
      h('h1', {}, name)),
    cards,
    h('div', { class: 'columns columns-wide-left' }, section('Partitions', partitions), section('Settings', settings)),
    section('Records', recordBrowser.el));

  async function refresh() {
    topic = await api.topic(name);
    sample([topic]);
    replace(cards,
      stat('Partitions', fmtNum(topic.partitions), { name: 'partitions' }),
      stat('Records', fmtNum(storedRecords(topic)), { name: 'records', hint: 'within retention' }),
      stat('Size', fmtBytes(size(topic)), { name: 'size', hint: 'on disk' }),
      stat('In/s', fmtRate(rateOf(name)), { name: 'rate' }));
    replace(partitions, table(['Partition', 'Earliest', 'Latest', 'Records', 'Size', 'Segments', ''],
      topic.partition_stats.map((p) => [
        String(p.partition), fmtNum(p.earliest), fmtNum(p.latest), fmtNum(p.latest - p.earliest),
        fmtBytes(p.size_bytes), fmtNum(p.segments),
        h('button', { type: 'button', class: 'btn btn-small', on: { click: () => recordBrowser.choosePartition(p.partition) } }, 'Browse'),
      ]), { numeric: [0, 1, 2, 3, 4, 5] }));
    replace(settings, facts([
      ['Retention', retention(topic)],
      ['Segment size', fmtBytes(topic.segment_bytes)],
      ['Segment age', fmtAge(topic.segment_ms)],
      ['Largest record', fmtBytes(topic.max_record_bytes)],
      ['Durability', topic.durability === 'interval' ? `synced every ${fmtAge(topic.flush_interval_ms)}` : topic.durability],
      ['Created', fmtTime(topic.created_at_ms)],
    ]));
    recordBrowser.update(topic);
  }
  return { refresh, unmount() {} };
}

export function mount(root, { view, params }) {
  return view === 'detail' ? mountDetail(root, params[0]) : mountList(root);
}

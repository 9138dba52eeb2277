// Subscriptions: backlog, oldest age and per-partition progress; pause, resume, seek and
// purge; for push subscriptions the breaker, the endpoint's health, the delivery log and
// manual retry; dead letters and redrive.
import { h, replace, stat, section, table, facts, link, badge, progress, fmtNum, fmtAge, fmtTime } from '../dom.js';
import { api } from '../api.js';
import { act, dialog, notify } from '../ui.js';
import { preview, recordDetail } from '../records.js';

/** Dead letters shown per page of the dead-letter topic. */
const DEAD_LETTERS_SHOWN = 50;

function stateBadges(s) {
  const out = [s.paused ? badge('paused', 'warn', { dataset: { state: 'paused' } }) : badge('active', 'ok', { dataset: { state: 'active' } })];
  const breaker = s.push_status && s.push_status.breaker;
  if (breaker) {
    const kind = { closed: 'ok', half_open: 'warn', open: 'bad' }[breaker] || 'muted';
    out.push(badge(`breaker ${breaker.replace('_', '-')}`, kind, { dataset: { breaker } }));
  }
  return h('span', { class: 'badges' }, out);
}

function mountList(root) {
  const box = h('div', {});
  root.append(h('header', { class: 'page-head' }, h('h1', {}, 'Subscriptions'),
    h('p', { class: 'muted' }, 'Queue subscriptions hand records out as leased work; push subscriptions call an HTTP endpoint with each.')),
  section('All subscriptions', box));
  async function refresh() {
    const { subscriptions } = await api.subscriptions();
    replace(box, table(['Subscription', 'Topic', 'Mode', 'Backlog', 'Oldest unacked', 'In flight', 'Delayed', 'Dead-lettered', 'Acked', 'State'],
      subscriptions.map((s) => ({
        attrs: { dataset: { subscription: s.name } },
        cells: [
          link(`#/subscriptions/${encodeURIComponent(s.name)}`, s.name),
          link(`#/topics/${encodeURIComponent(s.topic)}`, s.topic),
          s.mode,
          fmtNum(s.backlog), fmtAge(s.oldest_unacked_age_ms), fmtNum(s.in_flight), fmtNum(s.delayed),
          fmtNum(s.dead_lettered), fmtNum(s.acked), stateBadges(s),
        ],
      })), { numeric: [3, 4, 5, 6, 7, 8], empty: 'No subscriptions yet. Create one with `ferry sub create` or POST /v1/subscriptions.' }));
  }
  return { refresh, unmount() {} };
}

function retryText(retry) {
  if (!retry || !retry.strategy) return '—';
  if (retry.strategy === 'immediate') return 'immediately';
  return `${retry.strategy} from ${fmtAge(retry.delay_ms)} up to ${fmtAge(retry.max_delay_ms)}${retry.jitter && retry.jitter !== 'none' ? `, ${retry.jitter} jitter` : ''}`;
}

function seekDialog(name, sub) {
  const choice = h('select', { name: 'to', 'aria-label': 'Position' },
    h('option', { value: 'earliest' }, 'Earliest: every stored record again'),
    h('option', { value: 'latest' }, 'Latest: skip everything stored now'),
    h('option', { value: 'offset' }, 'An offset'),
    h('option', { value: 'timestamp' }, 'A time'));
  const partition = h('select', { name: 'partition', 'aria-label': 'Partition' },
    h('option', { value: '' }, 'every partition'),
    sub.partitions.map((p) => h('option', { value: p.partition }, `partition ${p.partition}`)));
  const offset = h('input', { name: 'offset', type: 'number', min: 0, value: 0, 'aria-label': 'Offset' });
  const time = h('input', { name: 'time', type: 'datetime-local', step: 1, 'aria-label': 'Time' });
  const offsetRow = h('div', { class: 'form-row' }, h('label', {}, 'Offset ', offset), h('label', {}, 'in ', partition));
  const timeRow = h('div', { class: 'form-row' }, h('label', {}, 'Time ', time));
  const sync = () => {
    offsetRow.hidden = choice.value !== 'offset';
    timeRow.hidden = choice.value !== 'timestamp';
  };
  choice.addEventListener('change', sync);
  sync();
  dialog({
    title: `Seek ${name}`,
    confirm: 'Seek',
    body: h('div', { class: 'form' },
      h('p', { class: 'muted' }, 'Moves the subscription: records before the position count as done, records from it on are delivered again. Leases and delayed records are dropped.'),
      h('label', { class: 'form-row' }, 'Move to ', choice), offsetRow, timeRow),
    async submit() {
      let position;
      if (choice.value === 'earliest' || choice.value === 'latest') position = { to: choice.value };
      else if (choice.value === 'offset') {
        position = { offset: Number(offset.value) };
        if (partition.value !== '') position.partition = Number(partition.value);
      } else {
        if (!time.value) throw new Error('Choose a time.');
        position = { timestamp: new Date(time.value).getTime() };
      }
      await api.seek(name, position);
      notify(`${name} moved.`);
    },
  });
}

function purgeDialog(name, sub) {
  dialog({
    title: `Purge ${name}?`,
    confirm: 'Purge',
    danger: true,
    body: h('p', {}, `Every record stored now counts as done: the backlog of ${fmtNum(sub.backlog)} drops to 0, and leases, waiting and delayed records are dropped. The records stay in the topic.`),
    async submit() {
      await api.purge(name);
      notify(`${name} purged.`);
    },
  });
}

/** The endpoint's health in a word, from the dispatcher's state. */
function endpointHealth(status) {
  if (!status) return badge('starting', 'muted');
  if (status.breaker === 'open') return badge('down: breaker open', 'bad');
  if (status.breaker === 'half_open') return badge('probing', 'warn');
  if (status.last_status === null || status.last_status === undefined) {
    return status.last_error ? badge('failing', 'bad') : badge('no requests yet', 'muted');
  }
  if (status.last_status >= 200 && status.last_status < 300) return badge('healthy', 'ok');
  return badge(`failing: last answer ${status.last_status}`, 'bad');
}

/** The push part: endpoint, breaker, delivery log with retry. */
function pushPanel(name) {
  const summary = h('div', {});
  const log = h('div', {});
  const partition = h('input', { type: 'number', min: 0, placeholder: 'partition', 'aria-label': 'Partition', class: 'w-small' });
  const offset = h('input', { type: 'number', min: 0, placeholder: 'offset', 'aria-label': 'Offset', class: 'w-offset' });
  let record = null;
  const clear = h('button', { type: 'button', class: 'btn', on: { click: () => { record = null; partition.value = ''; offset.value = ''; refreshLog(); } } }, 'All records');
  const form = h('form', { class: 'toolbar', on: { submit: (e) => {
    e.preventDefault();
    record = partition.value !== '' && offset.value !== '' ? { partition: Number(partition.value), offset: Number(offset.value) } : null;
    refreshLog();
  } } }, h('span', {}, 'One record: '), partition, offset, h('button', { type: 'submit', class: 'btn' }, 'Show attempts'), clear);

  async function refreshLog() {
    const { deliveries } = await api.deliveries(name, record);
    replace(log, table(['Time', 'Record', 'Attempt', 'Outcome', 'Status', 'Latency', 'Error', ''],
      deliveries.map((d) => {
        const kind = { delivered: 'ok', retry: 'warn', dead_letter: 'bad' }[d.outcome] || 'muted';
        const retry = h('button', { type: 'button', class: 'btn btn-small', title: 'Deliver this record again' }, 'Retry');
        retry.addEventListener('click', () => act(retry, () => api.retry(name, d.partition, d.offset),
          (a) => `Record ${a.partition}/${a.offset} will be delivered again (copy at ${a.copy.partition}/${a.copy.offset}).`));
        return {
          attrs: { dataset: { partition: d.partition, offset: d.offset } },
          cells: [fmtTime(d.time), `${d.partition} / ${fmtNum(d.offset)}`, String(d.attempt), badge(d.outcome.replace('_', ' '), kind),
            d.status === undefined ? '—' : String(d.status), `${fmtNum(d.latency_ms)} ms`,
            h('span', { class: 'error-text' }, d.error || ''), retry],
        };
      }), { numeric: [2, 4, 5], nowrap: [0, 1, 3], wide: [6], empty: record ? 'No attempts for this record.' : 'No requests yet.', attrs: { class: 'deliveries' } }));
  }

  return {
    el: h('div', {},
      section('Endpoint', summary),
      section('Delivery log (newest first)', form, log)),
    async refresh(sub) {
      const p = sub.push || {};
      const s = sub.push_status;
      replace(summary, h('div', { class: 'columns' },
        facts([
          ['URL', h('span', { class: 'mono' }, p.url || '—')],
          ['Health', endpointHealth(s)],
          ['Breaker', s ? badge(s.breaker.replace('_', '-'), { closed: 'ok', half_open: 'warn', open: 'bad' }[s.breaker] || 'muted', { dataset: { breaker: s.breaker } }) : '—'],
          ['Breaker changed', s ? fmtTime(s.breaker_changed_at) : '—'],
          ['Timeout', p.timeout_ms ? fmtAge(p.timeout_ms) : '—'],
          ['Concurrency', p.concurrency ? fmtNum(p.concurrency) : '—'],
        ]),
        facts([
          ['In flight', s ? fmtNum(s.in_flight) : '—'],
          ['Delivered', s ? fmtNum(s.delivered) : '—'],
          ['Retried', s ? fmtNum(s.retried) : '—'],
          ['Window', s ? `${fmtNum(s.window_failures)} failed of ${fmtNum(s.window_calls)}` : '—'],
          ['Last status', s && s.last_status !== null ? String(s.last_status) : '—'],
          ['Last error', s && s.last_error ? h('span', { class: 'error-text' }, s.last_error) : '—'],
        ])));
      await refreshLog();
    },
  };
}

/** Dead letters of this subscription (newest first) and the redrive button. */
function deadLetterPanel(name) {
  const list = h('div', {});
  const detail = h('div', { class: 'detail-box' }, h('p', { class: 'muted' }, 'Choose a dead letter to see it in full.'));
  const redrive = h('button', { type: 'button', class: 'btn btn-primary' }, 'Redrive all');
  const info = h('p', { class: 'muted' });
  redrive.addEventListener('click', () => act(redrive, () => api.redrive(name),
    (a) => `${fmtNum(a.redriven)} dead letter(s) sent back to the topic.`));
  let selected = null;

  async function letters(topic) {
    const t = await api.topic(topic);
    const reads = t.partition_stats.map((p) => api.read(topic, p.partition, Math.max(p.earliest, p.latest - DEAD_LETTERS_SHOWN), DEAD_LETTERS_SHOWN)
      .then((a) => a.records.map((r) => ({ ...r, partition: p.partition }))));
    const all = (await Promise.all(reads)).flat()
      .filter((r) => r.headers && r.headers['ferry-origin-subscription'] === name);
    all.sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset);
    return all.slice(0, DEAD_LETTERS_SHOWN);
  }

  return {
    el: h('div', { class: 'dead-letters' }, h('div', { class: 'toolbar' }, redrive, info),
      h('div', { class: 'browser-body stacked' }, h('div', { class: 'browser-list' }, list), detail)),
    async refresh(sub) {
      const topic = sub.dead_letter_topic;
      redrive.hidden = !topic;
      if (!topic) {
        info.textContent = 'This subscription has no dead-letter topic: records out of deliveries are dropped.';
        replace(list);
        return;
      }
      replace(info, 'In ', link(`#/topics/${encodeURIComponent(topic)}`, topic),
        `. Redrive produces them back to ${sub.topic}, for this subscription only; each is redriven once.`);
      let rows;
      try {
        rows = await letters(topic);
      } catch (e) {
        replace(list, h('p', { class: 'muted' }, `Could not read ${topic}: ${e.message}`));
        return;
      }
      replace(list, table(['Dead-lettered', 'From', 'Attempts', 'Last error', 'Key', 'Value'],
        rows.map((r) => ({
          attrs: {
            class: `clickable${selected === `${r.partition}/${r.offset}` ? ' selected' : ''}`,
            dataset: { offset: r.offset },
            on: { click: () => { selected = `${r.partition}/${r.offset}`; replace(detail, recordDetail(r, `Dead letter ${r.partition}/${fmtNum(r.offset)}`)); } },
          },
          cells: [fmtTime(r.timestamp, { seconds: true }),
            `${r.headers['ferry-origin-partition'] ?? '?'} / ${r.headers['ferry-origin-offset'] ?? '?'}`,
            String(r.headers['ferry-attempts'] ?? '—'),
            h('span', { class: 'error-text' }, typeof r.headers['ferry-last-error'] === 'string' ? r.headers['ferry-last-error'] : ''),
            preview(r.key), preview(r.value)],
        })), { nowrap: [0, 1], numeric: [2], wide: [5], empty: 'No dead letters.', attrs: { class: 'dead-letter-list' } }));
    },
  };
}

function mountDetail(root, name) {
  const title = h('h1', {}, name);
  const badges = h('span', {});
  const actions = h('div', { class: 'actions' });
  const cards = h('div', { class: 'stats' });
  const partitions = h('div', {});
  const settings = h('div', {});
  const push = pushPanel(name);
  const dead = deadLetterPanel(name);
  const pushBox = h('div', {});
  let sub = null;

  const pause = h('button', { type: 'button', class: 'btn' }, 'Pause');
  const resume = h('button', { type: 'button', class: 'btn' }, 'Resume');
  const seek = h('button', { type: 'button', class: 'btn' }, 'Seek\u2026');
  const purge = h('button', { type: 'button', class: 'btn btn-danger' }, 'Purge\u2026');
  pause.addEventListener('click', () => act(pause, () => api.pause(name), `${name} paused.`));
  resume.addEventListener('click', () => act(resume, () => api.resume(name), `${name} resumed.`));
  seek.addEventListener('click', () => sub && seekDialog(name, sub));
  purge.addEventListener('click', () => sub && purgeDialog(name, sub));
  actions.append(pause, resume, seek, purge);

  root.append(
    h('header', { class: 'page-head page-head-actions' },
      h('div', {}, h('div', { class: 'crumbs' }, link('#/subscriptions', 'Subscriptions'), ' / '),
        h('div', { class: 'title-row' }, title, badges)),
      actions),
    cards,
    h('div', { class: 'columns columns-wide-left' }, section('Progress per partition', partitions), section('Settings', settings)),
    pushBox,
    section('Dead letters', dead.el));

  async function refresh() {
    sub = await api.subscription(name);
    replace(badges, badge(sub.mode, 'info'), ' ', stateBadges(sub));
    pause.hidden = sub.paused;
    resume.hidden = !sub.paused;
    replace(cards,
      stat('Backlog', fmtNum(sub.backlog), { name: 'backlog', hint: 'records not yet done' }),
      stat('Oldest unacked', fmtAge(sub.oldest_unacked_age_ms), { name: 'oldest', hint: 'age of the oldest record not done' }),
      stat('In flight', fmtNum(sub.in_flight), { name: 'in-flight', hint: `${fmtNum(sub.waiting)} waiting` }),
      stat('Delayed', fmtNum(sub.delayed), { name: 'delayed' }),
      stat('Dead-lettered', fmtNum(sub.dead_lettered), { name: 'dead-lettered', kind: sub.dead_lettered ? 'warn' : null, hint: `${fmtNum(sub.dead_letter_pending)} pending` }),
      stat('Delivered', fmtNum(sub.delivered), { name: 'delivered', hint: `${fmtNum(sub.redelivered)} redelivered` }),
      stat('Acked', fmtNum(sub.acked), { name: 'acked' }));
    replace(partitions, table(['Partition', 'Ack floor', 'Head', 'Latest', 'Backlog', 'Done'],
      sub.partitions.map((p) => [String(p.partition), fmtNum(p.ack_floor), fmtNum(p.head), fmtNum(p.latest), fmtNum(p.backlog),
        progress(p.latest - p.backlog, p.latest)]), { numeric: [0, 1, 2, 3, 4] }));
    replace(settings, facts([
      ['Topic', link(`#/topics/${encodeURIComponent(sub.topic)}`, sub.topic)],
      ['Filter', sub.filter ? h('span', { class: 'mono' }, JSON.stringify(sub.filter)) : 'every record'],
      ['Visibility timeout', fmtAge(sub.visibility_timeout_ms)],
      ['Max deliveries', sub.max_deliveries ? fmtNum(sub.max_deliveries) : 'unlimited'],
      ['Retry', retryText(sub.retry)],
      ['Ordering', sub.ordering],
      ['In flight at most', fmtNum(sub.max_in_flight)],
      ['Created', fmtTime(sub.created_at_ms)],
    ]));
    if (sub.mode === 'push') {
      if (!pushBox.firstChild) pushBox.append(push.el);
      await push.refresh(sub);
    }
    await dead.refresh(sub);
  }
  return { refresh, unmount() {} };
}

export function mount(root, { view, params }) {
  return view === 'detail' ? mountDetail(root, params[0]) : mountList(root);
}

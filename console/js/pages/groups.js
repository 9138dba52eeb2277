// Consumer groups (Kafka protocol): members, what each was assigned, and lag.
import { h, replace, stat, section, table, link, badge, progress, fmtNum } from '../dom.js';
import { api } from '../api.js';

function stateBadge(state) {
  const kind = { Stable: 'ok', Empty: 'muted', PreparingRebalance: 'warn', CompletingRebalance: 'warn' }[state] || 'muted';
  return badge(state, kind, { dataset: { state } });
}

function mountList(root) {
  const box = h('div', {});
  root.append(h('header', { class: 'page-head' }, h('h1', {}, 'Consumer groups'),
    h('p', { class: 'muted' }, 'Groups of Kafka consumers: their members and how far behind the end of each partition their committed offsets are.')),
  section('All groups', box));
  async function refresh() {
    const { groups } = await api.groups();
    replace(box, table(['Group', 'State', 'Members', 'Topics', 'Generation', 'Lag'],
      groups.map((g) => ({
        attrs: { dataset: { group: g.group } },
        cells: [link(`#/groups/${encodeURIComponent(g.group)}`, g.group), stateBadge(g.state), fmtNum(g.members),
          g.topics.join(', ') || '—', fmtNum(g.generation), fmtNum(g.lag)],
      })), { numeric: [2, 4, 5], empty: 'No consumer groups yet. They appear when a Kafka consumer joins a group or commits offsets.' }));
  }
  return { refresh, unmount() {} };
}

function assignmentText(assignment) {
  if (assignment === null) return h('span', { class: 'muted' }, 'not a consumer assignment');
  if (assignment.length === 0) return h('span', { class: 'muted' }, 'nothing');
  return assignment.map((t) => `${t.topic}: ${t.partitions.join(', ') || '—'}`).join('; ');
}

function mountDetail(root, name) {
  const cards = h('div', { class: 'stats' });
  const members = h('div', {});
  const offsets = h('div', {});
  root.append(
    h('header', { class: 'page-head' },
      h('div', { class: 'crumbs' }, link('#/groups', 'Consumer groups'), ' / '),
      h('h1', {}, name)),
    cards,
    section('Members and assignment', members),
    section('Lag per partition', offsets));
  async function refresh() {
    const g = await api.group(name);
    replace(cards,
      stat('State', stateBadge(g.state), { name: 'state' }),
      stat('Members', fmtNum(g.members.length), { name: 'members' }),
      stat('Lag', fmtNum(g.lag), { name: 'lag', hint: 'end offsets minus committed' }),
      stat('Generation', fmtNum(g.generation), { name: 'generation', hint: g.protocol ? `assignor ${g.protocol}` : null }));
    replace(members, table(['Member', 'Client', 'Host', 'Assigned'],
      g.members.map((m) => [h('span', { class: 'mono' }, m.member_id), m.client_id, m.client_host,
        h('span', {}, assignmentText(m.assignment), m.member_id === g.leader ? [' ', badge('leader', 'info')] : null)]),
      { empty: 'No members now.' }));
    replace(offsets, table(['Topic', 'Partition', 'Committed', 'End offset', 'Lag', 'Consumed'],
      g.offsets.map((o) => ({
        attrs: { dataset: { topic: o.topic, partition: o.partition } },
        cells: [link(`#/topics/${encodeURIComponent(o.topic)}`, o.topic), String(o.partition),
          o.committed === null ? '—' : fmtNum(o.committed), o.end_offset === null ? '—' : fmtNum(o.end_offset),
          o.lag === null ? '—' : fmtNum(o.lag),
          o.lag === null ? '' : progress(o.end_offset - o.lag, o.end_offset)],
      })), { numeric: [1, 2, 3, 4], empty: 'Nothing committed or assigned.' }));
  }
  return { refresh, unmount() {} };
}

export function mount(root, { view, params }) {
  return view === 'detail' ? mountDetail(root, params[0]) : mountList(root);
}

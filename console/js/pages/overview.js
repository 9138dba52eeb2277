// Overview: health, what is stored, throughput, and what needs attention.
import { h, svg, replace, stat, section, table, link, badge, fmtNum, fmtBytes, fmtRate, fmtAge } from '../dom.js';
import { api } from '../api.js';
import { sample, rateOf, totalRate, series } from '../throughput.js';

const CHART_WIDTH = 640;
const CHART_HEIGHT = 140;

/** A line chart of records per second over the last readings. */
function chart(points) {
  if (points.length < 2) {
    return h('div', { class: 'chart-empty muted' }, 'Measuring: throughput shows after a few seconds.');
  }
  const t0 = points[0].at;
  const span = Math.max(1, points[points.length - 1].at - t0);
  const max = Math.max(1, ...points.map((p) => p.rate));
  const x = (p) => ((p.at - t0) / span) * CHART_WIDTH;
  const y = (p) => CHART_HEIGHT - (p.rate / max) * (CHART_HEIGHT - 10);
  const line = points.map((p) => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(' ');
  const area = `0,${CHART_HEIGHT} ${line} ${CHART_WIDTH},${CHART_HEIGHT}`;
  return h('div', { class: 'chart' },
    h('div', { class: 'chart-axis' },
      h('span', {}, `peak ${fmtRate(max)}`),
      h('span', {}, `last ${Math.round(span / 1000)} s`)),
    svg('svg', { viewBox: `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': 'Records per second' },
      svg('line', { x1: 0, y1: CHART_HEIGHT - 0.5, x2: CHART_WIDTH, y2: CHART_HEIGHT - 0.5, class: 'chart-base' }),
      svg('polygon', { points: area, class: 'chart-area' }),
      svg('polyline', { points: line, class: 'chart-line' })));
}

/** One word for a subscription: paused, its breaker when not closed, or active. */
function stateBadge(sub) {
  if (sub.paused) return badge('paused', 'warn');
  const breaker = sub.push_status && sub.push_status.breaker;
  if (breaker === 'open') return badge('breaker open', 'bad');
  if (breaker === 'half_open') return badge('breaker half-open', 'warn');
  return badge('active', 'ok');
}

export function mount(root) {
  const cards = h('div', { class: 'stats' });
  const chartBox = h('div', {});
  const topicsBox = h('div', {});
  const subsBox = h('div', {});
  root.append(
    h('header', { class: 'page-head' }, h('h1', {}, 'Overview'),
      h('p', { class: 'muted' }, 'This server at a glance. Throughput is measured by this page from the topics\u2019 end offsets.')),
    cards,
    section('Throughput (records produced per second, all topics)', chartBox),
    h('div', { class: 'columns' },
      section('Topics', topicsBox),
      section('Subscriptions', subsBox)));

  async function refresh() {
    const [topicList, subList, groupList, ready] = await Promise.all([
      api.topics(), api.subscriptions(), api.groups(), api.ready().then(() => true, () => false),
    ]);
    const topics = topicList.topics;
    sample(topics);
    const partitions = topics.reduce((n, t) => n + t.partition_stats.length, 0);
    const stored = topics.reduce((n, t) => n + t.partition_stats.reduce((m, p) => m + (p.latest - p.earliest), 0), 0);
    const bytes = topics.reduce((n, t) => n + t.partition_stats.reduce((m, p) => m + p.size_bytes, 0), 0);
    const subs = subList.subscriptions;
    const backlog = subs.reduce((n, s) => n + s.backlog, 0);
    const deadLettered = subs.reduce((n, s) => n + s.dead_lettered, 0);
    const openBreakers = subs.filter((s) => s.push_status && s.push_status.breaker !== 'closed').length;
    const lag = groupList.groups.reduce((n, g) => n + (g.lag || 0), 0);
    replace(cards,
      stat('Health', ready ? 'Ready' : 'Not ready', { name: 'health', kind: ready ? 'ok' : 'bad', hint: 'GET /readyz' }),
      stat('Throughput', fmtRate(totalRate()), { name: 'throughput', hint: 'records in per second' }),
      stat('Topics', fmtNum(topics.length), { name: 'topics', hint: `${fmtNum(partitions)} partitions` }),
      stat('Records stored', fmtNum(stored), { name: 'records', hint: 'within retention' }),
      stat('Disk', fmtBytes(bytes), { name: 'disk', hint: 'segment files' }),
      stat('Subscriptions', fmtNum(subs.length), { name: 'subscriptions', hint: `${fmtNum(backlog)} records of backlog` }),
      stat('Dead-lettered', fmtNum(deadLettered), { name: 'dead-lettered', kind: deadLettered ? 'warn' : null, hint: openBreakers ? `${openBreakers} breaker(s) not closed` : 'all breakers closed' }),
      stat('Consumer groups', fmtNum(groupList.groups.length), { name: 'groups', hint: `lag ${fmtNum(lag)}` }));
    replace(chartBox, chart(series()));
    replace(topicsBox, table(['Topic', 'Partitions', 'Records', 'Size', 'In/s'],
      topics.map((t) => [
        link(`#/topics/${encodeURIComponent(t.name)}`, t.name),
        fmtNum(t.partitions),
        fmtNum(t.partition_stats.reduce((m, p) => m + (p.latest - p.earliest), 0)),
        fmtBytes(t.partition_stats.reduce((m, p) => m + p.size_bytes, 0)),
        fmtRate(rateOf(t.name)),
      ]), { numeric: [1, 2, 3, 4], empty: 'No topics yet.' }));
    replace(subsBox, table(['Subscription', 'Mode', 'Backlog', 'Oldest', 'State'],
      subs.map((s) => [
        link(`#/subscriptions/${encodeURIComponent(s.name)}`, s.name),
        s.mode,
        fmtNum(s.backlog),
        fmtAge(s.oldest_unacked_age_ms),
        stateBadge(s),
      ]), { numeric: [2, 3], nowrap: [4], empty: 'No subscriptions yet.' }));
  }

  return { refresh, unmount() {} };
}

// Throughput, measured in the browser: the end offsets of every partition, read on
// each refresh, and how far they moved since the last reading. Ferry itself keeps no
// rates; this needs nothing but the topic list.

/** Readings kept for the chart: about 3 minutes at the refresh interval. */
const SAMPLES_MAX = 120;

const last = new Map(); // topic -> { at, end }
const rates = new Map(); // topic -> records per second
const history = []; // { at, rate } for all topics together

function endOffset(topic) {
  return topic.partition_stats.reduce((sum, p) => sum + p.latest, 0);
}

/** Takes a reading of `topics` (the answer of GET /v1/topics) at `at` (ms). */
export function sample(topics, at = Date.now()) {
  let total = 0;
  let known = false;
  const seen = new Set();
  for (const t of topics) {
    seen.add(t.name);
    const end = endOffset(t);
    const before = last.get(t.name);
    if (before && at > before.at && end >= before.end) {
      const rate = ((end - before.end) * 1000) / (at - before.at);
      rates.set(t.name, rate);
      total += rate;
      known = true;
    }
    // Readings closer than half a second apart say little: keep the older one.
    if (!before || at - before.at >= 500 || end < before.end) last.set(t.name, { at, end });
  }
  for (const name of [...last.keys()]) {
    if (!seen.has(name)) {
      last.delete(name);
      rates.delete(name);
    }
  }
  if (known) {
    const previous = history[history.length - 1];
    if (!previous || at - previous.at >= 500) history.push({ at, rate: total });
    if (history.length > SAMPLES_MAX) history.shift();
  }
}

/** Records per second into `topic` at the last reading, or null before two readings. */
export function rateOf(topic) {
  return rates.has(topic) ? rates.get(topic) : null;
}

/** Records per second into all topics, or null before two readings. */
export function totalRate() {
  return history.length ? history[history.length - 1].rate : null;
}

/** The readings for the chart, oldest first. */
export function series() {
  return history.slice();
}

// The console speaks to Ferry's public HTTP API, as any client does.

/** An error answer of the API (RFC 9457 problem details). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  /** The problem's type without its urn:ferry:problem: prefix. */
  get slug() {
    return String(this.problem.type || '').replace('urn:ferry:problem:', '');
  }
}

async function request(method, path, body) {
  const init = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

export const api = {
  ready: () => request('GET', '/readyz'),
  topics: () => request('GET', '/v1/topics'),
  topic: (name) => request('GET', `/v1/topics/${enc(name)}`),
  read: (topic, partition, offset, maxRecords) => request('GET',
    `/v1/topics/${enc(topic)}/partitions/${partition}/records?offset=${offset}&max_records=${maxRecords}`),
  offsetForTime: (topic, partition, ms) => request('GET',
    `/v1/topics/${enc(topic)}/partitions/${partition}/offsets?timestamp=${ms}`),
  subscriptions: () => request('GET', '/v1/subscriptions'),
  subscription: (name) => request('GET', `/v1/subscriptions/${enc(name)}`),
  pause: (name) => request('POST', `/v1/subscriptions/${enc(name)}/pause`),
  resume: (name) => request('POST', `/v1/subscriptions/${enc(name)}/resume`),
  seek: (name, position) => request('POST', `/v1/subscriptions/${enc(name)}/seek`, position),
  purge: (name) => request('POST', `/v1/subscriptions/${enc(name)}/purge`),
  redrive: (name) => request('POST', `/v1/subscriptions/${enc(name)}/redrive`, {}),
  retry: (name, partition, offset) => request('POST', `/v1/subscriptions/${enc(name)}/retry`,
    { partition, offset }),
  deliveries: (name, record) => request('GET', `/v1/subscriptions/${enc(name)}/deliveries?limit=50${
    record ? `&partition=${record.partition}&offset=${record.offset}` : ''}`),
  groups: () => request('GET', '/v1/groups'),
  group: (name) => request('GET', `/v1/groups/${enc(name)}`),
};

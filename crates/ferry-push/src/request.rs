//! Request building: the settings a batch of deliveries is sent with ([`Target`]: the
//! endpoint, Ferry's and the subscription's headers, the signing keys) and the request
//! for one delivery (body, signature, trace context, Ferry's headers).

use crate::cloudevents::{cloudevent_attributes, payload};
use crate::conn::{Call, Endpoint};
use crate::guard::Guard;
use crate::sign;
use crate::trace::traceparent;
use ferry_broker::subs::push::{Payload, PushConfig, PushMethod};
use ferry_broker::subs::{Delivery, SubscriptionConfig};
use ferry_trace::TraceParent;
use http::header::{HeaderMap, HeaderName, HeaderValue};

const H_WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const H_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const H_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const H_TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const H_FERRY_PARTITION: HeaderName = HeaderName::from_static("ferry-partition");
const H_FERRY_OFFSET: HeaderName = HeaderName::from_static("ferry-offset");
const H_FERRY_ATTEMPT: HeaderName = HeaderName::from_static("ferry-attempt");
const H_FERRY_KEY: HeaderName = HeaderName::from_static("ferry-key");

/// A record Ferry cannot send as an HTTP request (the record's fault, not the
/// endpoint's): what of it cannot be sent.
#[derive(Debug, Clone)]
pub(crate) struct Unsendable(String);

impl std::fmt::Display for Unsendable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot be sent as HTTP: {}", self.0)
    }
}

/// The settings a batch of deliveries is sent with.
pub(crate) struct Target {
    pub cfg: SubscriptionConfig,
    /// The endpoint, parsed and allowed; or why no request may be sent (a URL that does
    /// not parse, a refused literal address).
    pub endpoint: Result<Endpoint, String>,
    /// `host`, `user-agent` (Ferry's or the subscription's), `ferry-subscription`,
    /// `ferry-topic`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The subscription's own headers, added after Ferry's.
    custom: Vec<(HeaderName, HeaderValue)>,
    /// The current secrets' keys.
    signers: Vec<sign::Signer>,
    /// The previous secret's key while it is still valid (until the time given).
    previous: Option<(sign::Signer, u64)>,
}

impl Target {
    /// Settings of a batch of deliveries, with the endpoint's URL parsed, the secrets'
    /// keys and the headers every request carries made once.
    pub fn new(cfg: SubscriptionConfig, guard: &Guard) -> Target {
        let mut t = Target {
            endpoint: Err("not a push subscription".to_string()),
            headers: Vec::new(),
            custom: Vec::new(),
            signers: Vec::new(),
            previous: None,
            cfg,
        };
        let Some(p) = &t.cfg.push else { return t };
        t.endpoint = url::Url::parse(p.url.trim())
            .map_err(|e| format!("push.url does not parse: {e}"))
            .and_then(Endpoint::new)
            .and_then(|ep| {
                // Names are checked when connecting; literal addresses here.
                match ep.literal_ip().and_then(|ip| guard.refuses(ip)) {
                    Some(why) => Err(why),
                    None => Ok(ep),
                }
            });
        if let Ok(ep) = &t.endpoint {
            t.headers
                .push((http::header::HOST, ep.host_header().clone()));
        }
        // Checked when the subscription was made; one that does not convert is left out.
        for (k, v) in &p.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                t.custom.push((k, v));
            }
        }
        // The subscription's own `user-agent` replaces Ferry's.
        let agent = match t
            .custom
            .iter()
            .position(|(k, _)| k == http::header::USER_AGENT)
        {
            Some(i) => t.custom.remove(i).1,
            None => HeaderValue::from_static(concat!("Ferry/", env!("CARGO_PKG_VERSION"))),
        };
        t.headers.push((http::header::USER_AGENT, agent));
        for (name, value) in [
            ("ferry-subscription", &t.cfg.name),
            ("ferry-topic", &t.cfg.topic),
        ] {
            if let Ok(v) = HeaderValue::try_from(value.as_str()) {
                t.headers.push((HeaderName::from_static(name), v));
            }
        }
        t.signers = p
            .secret
            .iter()
            .filter_map(|s| sign::Signer::new(s))
            .collect();
        if let (Some(prev), Some(until)) = (&p.previous_secret, p.previous_secret_expires_at_ms) {
            t.previous = sign::Signer::new(prev).map(|s| (s, until));
        }
        t
    }

    /// The request for one delivery (`push` is the target's push settings): the
    /// target's headers and the record's own. `trace` is the attempt's span when
    /// tracing is on: the `traceparent` header names it.
    pub fn request(
        &self,
        push: &PushConfig,
        x: &Delivery,
        time: u64,
        trace: Option<TraceParent>,
    ) -> Result<Call, Unsendable> {
        let cfg = &self.cfg;
        let r = &x.record;
        let id = format!("{}-{}-{}", cfg.name, x.partition, r.offset);
        let (body, content_type) = payload(cfg, push, x, &id);
        let ts = time / 1000;
        // Room for every header up front: growing the map costs more than the headers.
        let mut h = HeaderMap::with_capacity(32);
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        let value = |what: &str, v: String| {
            HeaderValue::try_from(v)
                .map_err(|_| Unsendable(format!("its {what} is not a header value")))
        };
        let previous = self.previous.as_ref().filter(|(_, until)| time < *until);
        let signature = sign::signature_header(
            self.signers.iter().chain(previous.map(|(s, _)| s)),
            &id,
            ts,
            &body,
        );
        h.append(
            http::header::CONTENT_TYPE,
            value("content type", content_type)?,
        );
        h.append(H_WEBHOOK_SIGNATURE, value("signature", signature)?);
        let tp = match trace {
            Some(t) => t.to_string(),
            None => traceparent(r, &id),
        };
        h.append(H_TRACEPARENT, value("traceparent", tp)?);
        h.append(H_WEBHOOK_ID, value("id", id.clone())?);
        h.append(H_WEBHOOK_TIMESTAMP, HeaderValue::from(ts));
        h.append(H_FERRY_PARTITION, HeaderValue::from(x.partition));
        h.append(H_FERRY_OFFSET, HeaderValue::from(r.offset));
        h.append(H_FERRY_ATTEMPT, HeaderValue::from(x.attempt));
        if let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
            if key.bytes().all(|c| (b' '..=b'~').contains(&c)) {
                h.append(H_FERRY_KEY, value("key", key.to_string())?);
            }
        }
        if push.payload == Payload::CloudeventsBinary {
            for (k, v) in cloudevent_attributes(cfg, x, &id) {
                if let Some(s) = v.as_str() {
                    let name = HeaderName::try_from(format!("ce-{k}"))
                        .map_err(|_| Unsendable(format!("ce-{k} is not a header name")))?;
                    h.append(name, value(k, s.to_string())?);
                }
            }
        }
        for (k, v) in &self.custom {
            h.append(k.clone(), v.clone());
        }
        Ok(Call {
            method: match push.method {
                PushMethod::Post => http::Method::POST,
                PushMethod::Put => http::Method::PUT,
            },
            headers: h,
            body,
        })
    }
}

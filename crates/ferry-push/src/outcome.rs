//! What an attempt came to, typed: [`Outcome`] (how the endpoint answered, or why there
//! was no answer) and [`Decision`] (what is done with the record: ack, retry or
//! dead-letter). [`Decision::of`] is the one place an outcome becomes the ack, nack or
//! dead-letter decision, and [`Outcome::error`] and [`Decision::logged`] the one place
//! it becomes the delivery log's text.

use crate::conn::{Answer, Failure};
use crate::dlog::Logged;
use crate::request::Unsendable;
use http::StatusCode;

/// Bytes of a response body kept in the delivery log.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;
/// Longest wait a `Retry-After` may ask for before the retry policy's cap applies.
pub const RETRY_AFTER_MS_MAX: u64 = 24 * 3600 * 1000;

/// An answer's status and the start of its body, for the delivery log.
#[derive(Debug)]
pub(crate) struct Answered {
    pub status: StatusCode,
    pub response: Option<String>,
}

/// How one attempt went.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The endpoint took the record (2xx).
    Delivered(Answered),
    /// The endpoint answered with a status worth another try (5xx, or one of
    /// `push.retry_statuses`), perhaps with a `Retry-After` (in ms).
    RetryStatus {
        answer: Answered,
        retry_after_ms: Option<u64>,
    },
    /// The endpoint refused the record (any other status; a redirect that is not
    /// followed counts).
    Rejected(Answered),
    /// No answer: no connection, no complete answer in time, or a failed request.
    Transport(Failure),
    /// No request: the endpoint cannot be used (its URL does not parse, its address is
    /// refused).
    Unusable(String),
    /// No request: the record cannot be sent as HTTP.
    Unsendable(Unsendable),
}

impl Outcome {
    /// Classifies an answer by its status (`retry_statuses`: the 4xx statuses retried).
    pub fn of_answer(answer: Answer, retry_statuses: &[u16]) -> Outcome {
        let status = answer.status;
        let retry_after_ms = answer
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let answered = Answered {
            status,
            response: excerpt(&answer.body),
        };
        if status.is_success() {
            Outcome::Delivered(answered)
        } else if status.is_server_error() || retry_statuses.contains(&status.as_u16()) {
            Outcome::RetryStatus {
                answer: answered,
                retry_after_ms,
            }
        } else {
            Outcome::Rejected(answered)
        }
    }

    fn answered(&self) -> Option<&Answered> {
        match self {
            Outcome::Delivered(a)
            | Outcome::RetryStatus { answer: a, .. }
            | Outcome::Rejected(a) => Some(a),
            Outcome::Transport(_) | Outcome::Unusable(_) | Outcome::Unsendable(_) => None,
        }
    }

    /// The answer's status, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.answered().map(|a| a.status)
    }

    /// The start of the answer's body, when there was one.
    pub fn response(&self) -> Option<String> {
        self.answered().and_then(|a| a.response.clone())
    }

    /// Whether the attempt counts as the endpoint's failure for the breaker (a record
    /// the endpoint refused, or one that cannot be sent, does not).
    pub fn endpoint_failed(&self) -> bool {
        matches!(
            self,
            Outcome::RetryStatus { .. } | Outcome::Transport(_) | Outcome::Unusable(_)
        )
    }

    /// The error the delivery log, the status's `last_error` and the nack carry.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Delivered(_) => None,
            Outcome::RetryStatus { answer, .. } => Some(format!("HTTP {}", answer.status)),
            Outcome::Rejected(a) if a.status.is_redirection() => Some(format!(
                "HTTP {}: redirects are not followed (push.follow_redirects)",
                a.status
            )),
            Outcome::Rejected(a) => Some(format!("HTTP {}: refused by the endpoint", a.status)),
            Outcome::Transport(f) => Some(f.to_string()),
            Outcome::Unusable(why) => Some(why.clone()),
            Outcome::Unsendable(u) => Some(u.to_string()),
        }
    }
}

/// The subscription's rules an outcome is decided by.
pub(crate) struct Policy {
    /// The record is older than `push.max_age_ms`.
    pub too_old: bool,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// `max_deliveries` (0: no limit).
    pub max_deliveries: u32,
    /// The retry policy's longest delay.
    pub max_delay_ms: u64,
}

/// What is done with the record after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Acked (in the flusher's next batch).
    Ack,
    /// Nacked, to come again after the delay (the retry policy's when none); `last`
    /// when this was the last attempt allowed, so the nack dead-letters it.
    Retry { delay_ms: Option<u64>, last: bool },
    /// Dead-lettered now, for this reason.
    DeadLetter { reason: String },
}

impl Decision {
    /// The decision for an outcome under the subscription's rules.
    pub fn of(outcome: &Outcome, policy: &Policy) -> Decision {
        let reason = || outcome.error().unwrap_or_default();
        let delay_ms = match outcome {
            Outcome::Delivered(_) => return Decision::Ack,
            Outcome::Rejected(_) | Outcome::Unsendable(_) => {
                return Decision::DeadLetter { reason: reason() }
            }
            Outcome::RetryStatus { retry_after_ms, .. } => {
                retry_after_ms.map(|ms| ms.min(policy.max_delay_ms))
            }
            Outcome::Transport(_) | Outcome::Unusable(_) => None,
        };
        if policy.too_old {
            return Decision::DeadLetter {
                reason: format!("{}; older than push.max_age_ms", reason()),
            };
        }
        Decision::Retry {
            delay_ms,
            last: policy.max_deliveries > 0 && policy.attempt >= policy.max_deliveries,
        }
    }

    /// How the delivery log names the decision.
    pub fn logged(&self) -> Logged {
        match self {
            Decision::Ack => Logged::Delivered,
            Decision::Retry { last: false, .. } => Logged::Retry,
            Decision::Retry { last: true, .. } | Decision::DeadLetter { .. } => Logged::DeadLetter,
        }
    }

    /// The delay the delivery log shows for a retry.
    pub fn retry_in_ms(&self) -> Option<u64> {
        match self {
            Decision::Retry { delay_ms, .. } => *delay_ms,
            Decision::Ack | Decision::DeadLetter { .. } => None,
        }
    }
}

/// The first bytes of a response body, for the delivery log.
fn excerpt(body: &[u8]) -> Option<String> {
    let b = &body[..body.len().min(RESPONSE_EXCERPT_BYTES)];
    (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned())
}

/// `Retry-After` as milliseconds: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let ms = at
        .duration_since(std::time::SystemTime::now())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Answered {
        Answered {
            status: StatusCode::from_u16(status).unwrap(),
            response: None,
        }
    }

    fn policy() -> Policy {
        Policy {
            too_old: false,
            attempt: 1,
            max_deliveries: 3,
            max_delay_ms: 60_000,
        }
    }

    #[test]
    fn outcomes_keep_their_delivery_log_text() {
        let cases = [
            (Outcome::Delivered(answered(200)), None),
            (
                Outcome::RetryStatus {
                    answer: answered(503),
                    retry_after_ms: None,
                },
                Some("HTTP 503 Service Unavailable"),
            ),
            (
                Outcome::Rejected(answered(404)),
                Some("HTTP 404 Not Found: refused by the endpoint"),
            ),
            (
                Outcome::Rejected(answered(302)),
                Some("HTTP 302 Found: redirects are not followed (push.follow_redirects)"),
            ),
            (
                Outcome::Transport(Failure::Timeout),
                Some("timed out: no complete answer within push.timeout_ms"),
            ),
            (Outcome::Unusable("refused".into()), Some("refused")),
        ];
        for (outcome, text) in cases {
            assert_eq!(outcome.error().as_deref(), text, "{outcome:?}");
        }
    }

    #[test]
    fn decisions_follow_the_outcome_and_the_rules() {
        let retry = |ms| Outcome::RetryStatus {
            answer: answered(429),
            retry_after_ms: ms,
        };
        assert_eq!(
            Decision::of(&Outcome::Delivered(answered(204)), &policy()),
            Decision::Ack
        );
        let d = Decision::of(&retry(Some(120_000)), &policy());
        assert_eq!(
            d,
            Decision::Retry {
                delay_ms: Some(60_000),
                last: false
            }
        );
        assert_eq!((d.logged(), d.retry_in_ms()), (Logged::Retry, Some(60_000)));
        let last = Decision::of(
            &retry(None),
            &Policy {
                attempt: 3,
                ..policy()
            },
        );
        assert_eq!(last.logged(), Logged::DeadLetter);
        assert_eq!(
            Decision::of(
                &retry(None),
                &Policy {
                    too_old: true,
                    ..policy()
                }
            ),
            Decision::DeadLetter {
                reason: "HTTP 429 Too Many Requests; older than push.max_age_ms".into()
            }
        );
        let refused = Decision::of(&Outcome::Rejected(answered(400)), &policy());
        assert_eq!(refused.logged(), Logged::DeadLetter);
        assert!(!Outcome::Rejected(answered(400)).endpoint_failed());
        assert!(Outcome::Transport(Failure::Timeout).endpoint_failed());
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(3000));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }
}

//! Kafka frames without I/O: a request frame in, a typed request out; a typed response
//! in, a frame out. Nothing here panics the process on any input: lengths are checked
//! before the codec sees them, and a panic inside the codec is caught and reported as
//! a malformed request.
//!
//! Huge element counts in a frame (a few bytes claiming billions of entries) make the
//! codec reserve memory for them before decoding; the `ferry` binary's allocator hands
//! such reservations untouched address space, so they cost nothing and the decode then
//! fails on the short frame (see `crate::alloc`).

use crate::versions;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;

/// Bytes of api key, version and correlation id: the least a frame can hold.
pub const FRAME_PREFIX_BYTES: usize = 8;

#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: RequestKind,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a request header.
    TooShort(usize),
    UnknownApiKey(i16),
    /// ApiVersions of a version Ferry does not know: answered with UNSUPPORTED_VERSION
    /// and Ferry's ranges, so the client can retry with one it shares.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
    /// A known API at a version Ferry does not handle: no valid answer can be encoded.
    Unsupported {
        api_key: ApiKey,
        version: i16,
    },
    Malformed {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => {
                write!(f, "a frame of {n} bytes is too short for a request header")
            }
            FrameError::UnknownApiKey(k) => write!(f, "unknown API key {k}"),
            FrameError::UnsupportedApiVersions { .. } => {
                write!(f, "ApiVersions at an unknown version")
            }
            FrameError::Unsupported { api_key, version } => {
                write!(f, "{api_key:?} v{version} is not supported by Ferry")
            }
            FrameError::Malformed {
                api_key,
                version,
                reason,
            } => write!(f, "malformed {api_key:?} v{version} request: {reason}"),
        }
    }
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

/// Decodes one request frame (the bytes after the 4-byte length).
pub fn decode_request(frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < FRAME_PREFIX_BYTES {
        return Err(FrameError::TooShort(frame.len()));
    }
    let key_raw = be_i16(&frame[0..2]);
    let version = be_i16(&frame[2..4]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key_raw).map_err(|_| FrameError::UnknownApiKey(key_raw))?;
    if !versions::supported(api_key, version) {
        if api_key == ApiKey::ApiVersions {
            return Err(FrameError::UnsupportedApiVersions { correlation_id });
        }
        return Err(FrameError::Unsupported { api_key, version });
    }
    let malformed = |reason: String| FrameError::Malformed {
        api_key,
        version,
        reason,
    };
    let decoded = std::panic::catch_unwind(move || {
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
        let body = RequestKind::decode(api_key, &mut buf, version)?;
        Ok::<_, anyhow::Error>((header, body))
    });
    let (header, body) = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(malformed(e.to_string())),
        Err(_) => return Err(malformed("the decoder failed on this input".into())),
    };
    Ok(Request {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        body,
    })
}

/// Frames a response: 4-byte length, header, body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    // The ApiVersions response header is always v0, so that any client can read it.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)?;
    body.encode(&mut out, version)?;
    let len = i32::try_from(out.len() - 4)
        .map_err(|_| anyhow::anyhow!("an answer of {} bytes is too large to frame", out.len()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// Ferry's ApiVersions answer body.
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = versions::SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// The answer to an ApiVersions request of an unknown version: v0, UNSUPPORTED_VERSION.
pub fn unsupported_api_versions(correlation_id: i32) -> anyhow::Result<Bytes> {
    let body = ResponseKind::ApiVersions(api_versions(ResponseError::UnsupportedVersion.code()));
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn a_metadata_request_decodes_with_its_header() {
        let f = frame(
            ApiKey::Metadata,
            9,
            &RequestKind::Metadata(MetadataRequest::default()),
        );
        let r = decode_request(f).unwrap();
        assert_eq!(
            (
                r.api_key,
                r.version,
                r.correlation_id,
                r.client_id.as_deref()
            ),
            (ApiKey::Metadata, 9, 7, Some("test"))
        );
    }

    #[test]
    fn short_unknown_and_unsupported_frames_are_errors_not_panics() {
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 3])).unwrap_err(),
            FrameError::TooShort(2)
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])).unwrap_err(),
            FrameError::UnknownApiKey(0x7f00)
        );
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 5])).unwrap_err(),
            FrameError::UnsupportedApiVersions { correlation_id: 5 }
        );
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 5])),
            Err(FrameError::Unsupported { .. })
        ));
        // A Metadata v0 header followed by garbage.
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0xff])),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn the_api_versions_answer_lists_every_supported_api() {
        let bytes = encode_response(
            ApiKey::ApiVersions,
            3,
            1,
            &ResponseKind::ApiVersions(api_versions(0)),
        )
        .unwrap();
        let mut b = bytes.slice(4..);
        let _ = ResponseHeader::decode(&mut b, 0).unwrap();
        let r = ApiVersionsResponse::decode(&mut b, 3).unwrap();
        assert_eq!(r.api_keys.len(), versions::SUPPORTED.len());
        assert!(r
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 0));
    }
}

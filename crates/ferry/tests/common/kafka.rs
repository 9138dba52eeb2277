//! A bare Kafka connection for tests that speak the protocol themselves: one request
//! at a time, any API and version the codec has.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct KafkaConn {
    conn: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    pub async fn connect(addr: &str) -> KafkaConn {
        KafkaConn {
            conn: TcpStream::connect(addr).await.unwrap(),
            correlation_id: 0,
        }
    }

    /// Sends `req` as `key` at `version` and decodes the answer.
    pub async fn send(&mut self, key: ApiKey, version: i16, req: RequestKind) -> ResponseKind {
        self.correlation_id += 1;
        let mut out = BytesMut::new();
        out.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("ferry-test")))
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        req.encode(&mut out, version).unwrap();
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        self.conn.write_all(&out).await.unwrap();
        let len = self.conn.read_i32().await.unwrap();
        let mut frame = vec![0; len as usize];
        self.conn.read_exact(&mut frame).await.unwrap();
        let mut frame = Bytes::from(frame);
        let header =
            ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        ResponseKind::decode(key, &mut frame, version).unwrap()
    }
}

/// Calls `$conn.send` and unwraps the answer of the expected kind:
/// `kafka_call!(conn, Metadata, 12, request)`.
#[macro_export]
macro_rules! kafka_call {
    ($conn:expr, $api:ident, $version:expr, $req:expr) => {
        match $conn
            .send(
                kafka_protocol::messages::ApiKey::$api,
                $version,
                kafka_protocol::messages::RequestKind::$api($req),
            )
            .await
        {
            kafka_protocol::messages::ResponseKind::$api(r) => r,
            other => panic!("an answer of another kind: {other:?}"),
        }
    };
}

//! Request bodies: read up to a cap (413 past it, refused from Content-Length before reading; a
//! streamed body is cut off at the cap), and JSON error replies with a reason.

use bytes::{Buf, Bytes};
use futures::StreamExt;
use warp::http::StatusCode;

/// A JSON `{"error": reason}` reply with `status`.
pub fn json_error(status: StatusCode, reason: &str) -> warp::reply::Response {
    warp::Reply::into_response(warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"error": reason})),
        status,
    ))
}

/// Reads the body up to `cap` bytes; `Err(413)` past it.
pub async fn read_capped(
    declared: Option<u64>,
    mut body: impl futures::Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
    cap: u64,
) -> Result<Bytes, warp::reply::Response> {
    let too_big = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {cap} bytes"),
        )
    };
    if declared.is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(16 * 1024).min(cap) as usize);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")))?;
        if out.len() as u64 + chunk.remaining() as u64 > cap {
            return Err(too_big());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

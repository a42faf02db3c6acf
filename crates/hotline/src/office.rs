//! The office socket (`DATA_DIR/office.sock`, [`hotline_api::office`]):
//! the server binds it, `hotline admin line-aide` calls it.

use std::path::Path;

use http_body_util::{BodyExt, Full};

use crate::anyhow_lite;

/// Binds the office socket, owner-only. A socket another live server
/// answers on is left to it (`None`); a stale one, from a process that
/// died, is replaced.
pub async fn bind(data_dir: &Path) -> anyhow_lite::Result<Option<tokio::net::UnixListener>> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(hotline_api::office::SOCKET);
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            tracing::warn!(path = %path.display(), "another server answers on the office socket; this one serves none");
            return Ok(None);
        }
        std::fs::remove_file(&path)
            .map_err(|e| format!("removing the stale {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("binding the office socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(listener))
}

/// Removes the socket at a graceful stop.
pub fn unbind(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(hotline_api::office::SOCKET));
}

/// POSTs `body` to `path` on the running server's office socket; the
/// answer's JSON, or the server's `error` as the message.
pub async fn call(
    data_dir: &Path,
    path: &str,
    body: &serde_json::Value,
) -> anyhow_lite::Result<serde_json::Value> {
    let socket = data_dir.join(hotline_api::office::SOCKET);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            format!(
                "no running server answers on {} ({e}): start it (`hotline serve`) and try again",
                socket.display()
            )
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::post(path)
        .header(http::header::HOST, "office")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        let code = answer["errcode"].as_str().unwrap_or("");
        return Err(format!("{error} ({code}, HTTP {})", status.as_u16()).into());
    }
    Ok(answer)
}

//! Config management plugins: the repo-server side of Argo CD's sidecar
//! protocol (`plugin.ConfigManagementPluginService` over a Unix socket).

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// A channel to the plugin sidecar listening on `socket` (plaintext
/// HTTP/2 over a Unix socket, as Argo CD dials it). Connects lazily: the
/// first call fails if nothing listens there.
pub fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://cmp.invalid")
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
}

//! The HTTP clients and the machine's CA certificates. reqwest verifies servers against the
//! system's CA bundle and refuses to build a client at all when there is none (a minimal Debian
//! root without `ca-certificates`: "cannot build the HTTP client: builder error"). Then an
//! `https://` server cannot be verified, which is said in words; an `http://` one (the emulator,
//! a test endpoint) needs no certificate, and gets a client without CA roots.

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no CA certificates on this machine, so no https:// server can be verified: install the \
         ca-certificates package (or set SSL_CERT_FILE to a bundle)"
    )]
    NoCaCertificates,
    // The text rather than a source: reqwest's builder error shows its cause in its own text.
    #[error("{0}")]
    Builder(String),
}

/// Builds the client `configure` describes. `needs_tls`: some URL it is for is `https://`.
pub fn build(
    configure: impl Fn() -> reqwest::ClientBuilder,
    needs_tls: bool,
) -> Result<reqwest::Client, ClientError> {
    let err = match configure().build() {
        Ok(client) => return Ok(client),
        Err(err) => err,
    };
    // With no roots asked for, the system's bundle is not read: if that builds, the bundle was
    // what failed.
    match configure()
        .tls_certs_only(Vec::<reqwest::Certificate>::new())
        .build()
    {
        Ok(client) if !needs_tls => {
            tracing::warn!(
                "no CA certificates on this machine (install the ca-certificates package): \
                 https:// servers cannot be verified; the http:// ones configured work without"
            );
            Ok(client)
        }
        Ok(_) => Err(ClientError::NoCaCertificates),
        Err(_) => Err(ClientError::Builder(err.without_url().to_string())),
    }
}

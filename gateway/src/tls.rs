//! The HTTPS/WSS listener (`--https`): TLS with rustls (aws-lc-rs), then the same router as HTTP
//! (browsers allow the camera only in a secure context off localhost). The certificate comes
//! from `--tls-cert`/`--tls-key` (PEM), or `--tls-self-signed` makes a development one (rcgen)
//! for localhost, this host's name and addresses.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::flv_http::serve_hyper;
use crate::flv_play::FlvService;
use crate::io::accept_until_shutdown;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the TLS certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("reading the TLS key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCert { path: String },
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor and the SHA-256 of its certificate (shown in the banner).
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub fingerprint: String,
}

/// From PEM files.
pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    acceptor(certs, key)
}

/// A development certificate for `names` (host names and addresses).
pub fn self_signed(names: Vec<String>) -> Result<Tls, TlsError> {
    let ck = rcgen::generate_simple_self_signed(names)?;
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| TlsError::Rustls(rustls::Error::General(e.into())))?;
    acceptor(vec![cert], key)
}

/// The names a self-signed certificate covers: localhost, loopback, the host's name, `ips`.
pub fn self_signed_names(ips: &[IpAddr]) -> Vec<String> {
    let mut v = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            v.push(h.to_string());
        }
    }
    for ip in ips {
        let s = ip.to_string();
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

fn acceptor(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Tls, TlsError> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certs[0].as_ref());
    let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // hyper speaks HTTP/1.1 here (WebSocket upgrades included).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        fingerprint,
    })
}

/// Accepts TLS connections until shutdown and serves them with `router` (HTTP-FLV included:
/// through axum, not the plain listener's fast path).
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: axum::Router, st: Arc<FlvService>) {
    let open = Arc::new(());
    let head_timeout = Duration::from_secs(st.http.request_head_timeout_secs);
    accept_until_shutdown(&listener, st.shutdown.clone(), "HTTPS", |sock, peer: SocketAddr| {
        if let Err(e) = sock.set_nodelay(true) {
            warn!("TCP_NODELAY: {e}");
        }
        let (router, st, token, acceptor) = (router.clone(), st.clone(), open.clone(), acceptor.clone());
        tokio::spawn(async move {
            // The handshake must finish like a request head: a silent client is dropped.
            match tokio::time::timeout(head_timeout, acceptor.accept(sock)).await {
                Ok(Ok(tls)) => serve_hyper(tls, peer, router, head_timeout, st).await,
                Ok(Err(e)) => debug!(%peer, "TLS handshake: {e}"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
            drop(token);
        });
    })
    .await;
    drop(listener);
    while Arc::strong_count(&open) > 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! PostgreSQL through the `postgres` crate (synchronous, on the store's own threads), with
//! TLS by rustls as libpq's `sslmode` describes it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::{Cell, Conn, Row, Value};
use crate::store::{Backend, StoreError};

/// Prepared statements kept per connection; beyond that the cache starts over (the store's
/// fixed texts are a few dozen; multi-row inserts add one per batch size).
const STATEMENT_CACHE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// libpq's `sslmode`, which tokio-postgres knows only in part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// `allow` and `prefer` (the default): TLS if the server offers it, certificate unchecked.
    Prefer,
    /// TLS, certificate unchecked (checked against `sslrootcert` when that is given).
    Require,
    /// TLS, the certificate chain checked, not the host name.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

/// A `postgres://` URL split into what tokio-postgres parses and the TLS options it does not.
#[derive(Debug, PartialEq, Eq)]
pub struct PgUrl {
    pub url: String,
    pub ssl_mode: SslMode,
    pub root_cert: Option<String>,
}

pub fn parse_url(url: &str) -> Result<PgUrl, StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", mode)) => {
                ssl_mode = match mode {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(StoreError::Url(format!(
                            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        )));
                    }
                }
            }
            Some(("sslrootcert", path)) => root_cert = Some(path.to_owned()),
            _ => rest.push(pair),
        }
    }
    // A `host` option names the server (e.g. Cloud SQL's socket folder) instead of the URL's
    // host, as libpq-style URLs written for other drivers mean it; tokio-postgres would try
    // both, the URL's first.
    let base = if rest.iter().any(|p| p.starts_with("host=")) {
        without_host(base)
    } else {
        base.to_owned()
    };
    let url = if rest.is_empty() {
        base
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    // libpq: with a root certificate, `require` checks the chain like `verify-ca`.
    if ssl_mode == SslMode::Require && root_cert.is_some() {
        ssl_mode = SslMode::VerifyCa;
    }
    Ok(PgUrl {
        url,
        ssl_mode,
        root_cert,
    })
}

/// `postgres://user:pw@host:port/db` without `host:port`.
fn without_host(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority.rsplit_once('@').map(|(user, _)| user);
    match user {
        Some(user) => format!("{scheme}://{user}@{path}"),
        None => format!("{scheme}://{path}"),
    }
}

impl PgConn {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let parsed = parse_url(url)?;
        // Never the URL itself in an error: it may hold a password.
        let mut config = postgres::Config::from_str(&parsed.url)
            .map_err(|e| StoreError::Url(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.ssl_mode(match parsed.ssl_mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&parsed)?);
        let client = config.connect(tls).map_err(db_error)?;
        Ok(Self {
            client,
            statements: HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).map_err(db_error)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// The server's message and SQLSTATE, which the error's own text ("db error") leaves out. Not
/// its detail, which may quote the row's values.
fn db_error(e: postgres::Error) -> StoreError {
    StoreError::Db(match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", e, db.message(), db.code().code()),
        None => e.to_string(),
    })
}

fn tls_config(url: &PgUrl) -> Result<ClientConfig, StoreError> {
    crate::tls::install();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (url.ssl_mode, &url.root_cert) {
        (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => Arc::new(Unchecked(provider)),
        (mode, Some(path)) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::pem::PemObject::pem_file_iter(path)
                .map_err(|e| StoreError::Url(format!("sslrootcert {path}: {e}")))?;
            for cert in certs {
                let cert: CertificateDer<'static> =
                    cert.map_err(|e| StoreError::Url(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Url(format!("sslrootcert {path}: {e}")))?;
            }
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| StoreError::Url(format!("sslrootcert {path}: {e}")))?;
            any_name(mode, webpki)
        }
        (mode, None) => {
            let platform = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| StoreError::Url(format!("TLS roots: {e}")))?;
            any_name(mode, Arc::new(platform))
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn any_name(mode: SslMode, inner: Arc<dyn ServerCertVerifier>) -> Arc<dyn ServerCertVerifier> {
    if mode == SslMode::VerifyCa {
        Arc::new(ChainOnly(inner))
    } else {
        inner
    }
}

/// `prefer`/`require`: encrypted, but any certificate is accepted (libpq's meaning). The
/// handshake's signatures are still checked, so the session is with the certificate's holder.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Integers go to whatever integer column the server inferred; text to text.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (v != 0).to_sql(ty, out),
            Value::Int(v) => Err(format!("integer {v} for a parameter of type {ty}").into()),
            Value::Text(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn cells(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)
                .map(|v| v.map(Cell::Bytes))
        } else {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.map(Cell::Text))
        };
        out.push(
            cell.map_err(|e| StoreError::Corrupt(format!("column {}: {e}", column.name())))?
                .unwrap_or(Cell::Null),
        );
    }
    Ok(Row(out))
}

fn as_params<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        self.client
            .execute(&stmt, &as_params(params))
            .map_err(db_error)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self
            .client
            .query(&stmt, &as_params(params))
            .map_err(db_error)?;
        rows.iter().map(cells).collect()
    }

    fn insert_id(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        // The same text every time for one `sql`, so the statement cache keeps it.
        let returning = format!("{sql} RETURNING id");
        match self.query(&returning, params)?.first() {
            Some(row) => row.opt_int(0),
            None => Ok(None),
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(db_error)
    }

    fn begin_write(&mut self, durable: bool) -> Result<(), StoreError> {
        // Not durable: the commit does not wait for the WAL flush (a crash of the server may
        // lose the last moments of such commits, never corrupt anything).
        self.batch(if durable {
            "BEGIN"
        } else {
            "BEGIN; SET LOCAL synchronous_commit = off"
        })
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let plain = parse_url("postgres://u:p@db:5432/h").unwrap();
        assert_eq!(plain.url, "postgres://u:p@db:5432/h");
        assert_eq!(plain.ssl_mode, SslMode::Prefer);
        let full =
            parse_url("postgres://db/h?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(full.url, "postgres://db/h?application_name=x");
        assert_eq!(full.ssl_mode, SslMode::VerifyFull);
        assert_eq!(full.root_cert.as_deref(), Some("/ca.pem"));
        let require = parse_url("postgres://db/h?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(require.ssl_mode, SslMode::VerifyCa, "libpq's rule");
        assert_eq!(
            parse_url("postgres://db/h?sslmode=disable")
                .unwrap()
                .ssl_mode,
            SslMode::Disable
        );
        let socket =
            parse_url("postgres://u:p@localhost:5432/h?host=/cloudsql/p:r:i&sslmode=disable")
                .unwrap();
        assert_eq!(socket.url, "postgres://u:p@/h?host=/cloudsql/p:r:i");
        let config = postgres::Config::from_str(&socket.url).unwrap();
        assert_eq!(
            config.get_hosts(),
            [postgres::config::Host::Unix("/cloudsql/p:r:i".into())]
        );
        assert_eq!(config.get_user(), Some("u"));
        assert_eq!(config.get_dbname(), Some("h"));
        let bad = parse_url("postgres://db/h?sslmode=sometimes").unwrap_err();
        assert!(bad.to_string().contains("sometimes"), "{bad}");
    }
}

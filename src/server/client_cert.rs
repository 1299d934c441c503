//! Client certificate identity (mTLS on listeners): what a verified client
//! certificate says about its holder, made available to later phases and,
//! when configured, forwarded upstream in an Envoy-style
//! `x-forwarded-client-cert` header.

use http::HeaderValue;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A distinguished name in one spelling, without blanks around the commas
/// between its attributes (`CN=app, O=Example` becomes `CN=app,O=Example`),
/// so configured names match however they were written.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

/// The identity in a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject, like `CN=mobile-app,O=Example` (see [`normalize_dn`]).
    pub subject: String,
    /// Subject alternative names: `DNS:…`, `URI:…`, `email:…`, `IP:…`.
    pub sans: Vec<String>,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
}

impl ClientIdentity {
    /// Reads the identity from a certificate the TLS layer has verified.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => sans.push(format!(
                            "IP:{}",
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?)
                        )),
                        16 => sans.push(format!(
                            "IP:{}",
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?)
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Some(ClientIdentity {
            subject: normalize_dn(&cert.subject().to_string()),
            sans,
            fingerprint,
        })
    }

    /// The `x-forwarded-client-cert` value:
    /// `Hash=<sha256>;Subject="<subject>";DNS=<name>;URI=<uri>…` (Envoy's format).
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut v = format!(
            "Hash={};Subject=\"{}\"",
            self.fingerprint,
            self.subject.replace(['"', '\\'], "")
        );
        for san in &self.sans {
            if let Some((kind, value)) = san.split_once(':') {
                let key = match kind {
                    "DNS" => "DNS",
                    "URI" => "URI",
                    _ => continue,
                };
                v.push(';');
                v.push_str(key);
                v.push('=');
                v.push_str(value);
            }
        }
        HeaderValue::from_str(&v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_dn;

    #[test]
    fn distinguished_names_have_one_spelling() {
        assert_eq!(normalize_dn("CN=app, O=Example"), "CN=app,O=Example");
        assert_eq!(normalize_dn("CN=app,O=Example"), "CN=app,O=Example");
        assert_eq!(normalize_dn(" CN=app ,  O=Example "), "CN=app,O=Example");
    }
}

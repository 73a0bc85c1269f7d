//! The jitid grant extension: how an X.509-SVID says which grant, task,
//! entitlement and actions it was issued for; and the attestation identity
//! marker ([`IDENTITY_MARKER_OID`]), which says a certificate is an
//! attestation identity and never an SVID.
//!
//! OID `1.2.840.113556.1.8000.2554.9282.24625.9397.16591.41083.15462298.1019156`,
//! always non-critical. The OID is derived from the UUID
//! `24426031-24b5-40cf-a07b-ebef9a0f8d14` under the arc
//! `1.2.840.113556.1.8000.2554` that Microsoft set aside for self-assigned
//! UUID-based OIDs (five 16-bit arcs, then two 24-bit arcs): it needs no
//! registration, like `2.25.<uuid>`, but every arc fits in 32 bits, so
//! parsers that follow RFC 5280's minimum (arcs up to 2^28) read it. Many
//! reject the 128-bit arc of `2.25.<uuid>` (pyca/cryptography 38 to 43,
//! RustCrypto `const-oid`, rcgen).
//!
//! The value is DER:
//!
//! ```text
//! JitidGrant ::= SEQUENCE {
//!     version      INTEGER (1),
//!     grantId      UTF8String,   -- UUID, hyphenated lowercase
//!     taskId       UTF8String,
//!     entitlement  UTF8String,
//!     actions      SEQUENCE SIZE (1..MAX) OF UTF8String,
//!     epoch        UTF8String,   -- the grant store's epoch at issuance
//!     breakGlass   BOOLEAN DEFAULT FALSE,
//!                                -- issued on the emergency path
//!     parentGrantIds [0] IMPLICIT SEQUENCE OF UTF8String OPTIONAL,
//!                                -- a delegated grant's ancestors,
//!                                -- parent first
//!     ...                        -- later versions append fields; readers
//!                                -- ignore what follows the known ones
//! }
//! ```

/// Arcs of the grant extension's OID.
pub const GRANT_EXTENSION_OID: &[u64] = &[
    1, 2, 840, 113556, 1, 8000, 2554, 9282, 24625, 9397, 16591, 41083, 15462298, 1019156,
];

/// The OID in dotted form, for docs and other languages.
pub const GRANT_EXTENSION_OID_STR: &str =
    "1.2.840.113556.1.8000.2554.9282.24625.9397.16591.41083.15462298.1019156";

const VERSION: u64 = 1;

/// The grant an X.509-SVID was issued under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantExtension {
    /// The grant's id.
    pub grant_id: String,
    /// The task the grant is for.
    pub task_id: String,
    /// The entitlement the grant uses.
    pub entitlement: String,
    /// The actions the certificate is good for.
    pub actions: Vec<String>,
    /// The grant store's epoch when the certificate was minted.
    pub epoch: String,
    /// Whether the grant was issued on the break-glass path.
    pub break_glass: bool,
    /// For a delegated grant, its ancestors' ids, parent first: ending any
    /// of them ends this grant too.
    pub parent_grant_ids: Vec<String>,
}

/// Why a certificate's grant extension could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The certificate itself is not valid DER X.509.
    #[error("not a DER X.509 certificate")]
    BadCertificate,
    /// The certificate has no grant extension.
    #[error("certificate has no jitid grant extension")]
    Missing,
    /// The extension appears more than once.
    #[error("jitid grant extension appears more than once")]
    Duplicate,
    /// The extension value is not a valid `JitidGrant`.
    #[error("jitid grant extension is malformed")]
    Malformed,
    /// The extension has a version this library does not know.
    #[error("jitid grant extension has unsupported version {0}")]
    UnsupportedVersion(u64),
}

// === impl GrantExtension ===

impl GrantExtension {
    /// The DER encoding of the extension value.
    pub fn to_der(&self) -> Vec<u8> {
        yasna::construct_der(|writer| {
            writer.write_sequence(|writer| {
                writer.next().write_u64(VERSION);
                writer.next().write_utf8_string(&self.grant_id);
                writer.next().write_utf8_string(&self.task_id);
                writer.next().write_utf8_string(&self.entitlement);
                writer.next().write_sequence_of(|writer| {
                    for action in &self.actions {
                        writer.next().write_utf8_string(action);
                    }
                });
                writer.next().write_utf8_string(&self.epoch);
                // DER omits a field equal to its DEFAULT.
                if self.break_glass {
                    writer.next().write_bool(true);
                }
                if !self.parent_grant_ids.is_empty() {
                    writer
                        .next()
                        .write_tagged_implicit(yasna::Tag::context(0), |writer| {
                            writer.write_sequence_of(|writer| {
                                for id in &self.parent_grant_ids {
                                    writer.next().write_utf8_string(id);
                                }
                            })
                        });
                }
            });
        })
    }

    /// Decodes an extension value.
    pub fn from_der(der: &[u8]) -> Result<Self, ExtensionError> {
        let mut version_seen = None;
        let parsed = yasna::parse_der(der, |reader| {
            reader.read_sequence(|reader| {
                let version = reader.next().read_u64()?;
                version_seen = Some(version);
                if version != VERSION {
                    return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                }
                let grant_id = reader.next().read_utf8string()?;
                let task_id = reader.next().read_utf8string()?;
                let entitlement = reader.next().read_utf8string()?;
                let mut actions = Vec::new();
                reader.next().read_sequence_of(|reader| {
                    actions.push(reader.read_utf8string()?);
                    Ok(())
                })?;
                let epoch = reader.next().read_utf8string()?;
                let mut rest = Vec::new();
                while let Some(der) = reader.read_optional(|reader| reader.read_der())? {
                    rest.push(der);
                }
                let mut rest = rest.iter().peekable();
                // BOOLEAN TRUE; FALSE is the default and never encoded.
                let break_glass = rest
                    .next_if(|der| der.first() == Some(&0x01))
                    .is_some_and(|der| der.as_slice() == [0x01, 0x01, 0xff]);
                let parent_grant_ids = match rest.next_if(|der| der.first() == Some(&0xa0)) {
                    Some(der) => yasna::parse_der(der, |reader| {
                        reader.read_tagged_implicit(yasna::Tag::context(0), |reader| {
                            reader.collect_sequence_of(|reader| reader.read_utf8string())
                        })
                    })?,
                    None => Vec::new(),
                };
                // Fields added by later versions of this version are ignored.
                Ok(Self {
                    grant_id,
                    task_id,
                    entitlement,
                    actions,
                    epoch,
                    break_glass,
                    parent_grant_ids,
                })
            })
        });
        match (parsed, version_seen) {
            (Ok(extension), _) if !extension.actions.is_empty() => Ok(extension),
            (Err(_), Some(version)) if version != VERSION => {
                Err(ExtensionError::UnsupportedVersion(version))
            }
            _ => Err(ExtensionError::Malformed),
        }
    }

    /// Reads the grant extension of a DER certificate.
    pub fn from_certificate(cert_der: &[u8]) -> Result<Self, ExtensionError> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|_| ExtensionError::BadCertificate)?;
        let oid = x509_parser::der_parser::oid::Oid::from(GRANT_EXTENSION_OID)
            .map_err(|_| ExtensionError::Malformed)?;
        match cert.get_extension_unique(&oid) {
            Ok(Some(extension)) => Self::from_der(extension.value),
            Ok(None) => Err(ExtensionError::Missing),
            Err(_) => Err(ExtensionError::Duplicate),
        }
    }

    /// The extension as an rcgen custom extension (non-critical).
    pub fn to_rcgen(&self) -> rcgen::CustomExtension {
        rcgen::CustomExtension::from_oid_content(GRANT_EXTENSION_OID, self.to_der())
    }
}

/// Arcs of the attestation identity marker's OID: a non-critical extension
/// that every attestation identity carries and no SVID does, so that a
/// relying party (the client library's peer verifier, `Verify`) can refuse
/// an attestation identity presented as an SVID. Derived from the UUID
/// `b36d69cb-e7f3-4ccf-95d2-d9473b91dd1f` under the same arc as
/// [`GRANT_EXTENSION_OID`]. Its value is DER
/// `JitidAttestationIdentity ::= SEQUENCE { version INTEGER (1), ... }`;
/// readers look only at its presence.
pub const IDENTITY_MARKER_OID: &[u64] = &[
    1, 2, 840, 113556, 1, 8000, 2554, 45933, 27083, 59379, 19663, 38354, 14239547, 9559327,
];

/// The marker's OID in dotted form, for docs and other languages.
pub const IDENTITY_MARKER_OID_STR: &str =
    "1.2.840.113556.1.8000.2554.45933.27083.59379.19663.38354.14239547.9559327";

/// The attestation identity marker as an rcgen custom extension
/// (non-critical).
pub fn identity_marker_rcgen() -> rcgen::CustomExtension {
    let value = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| writer.next().write_u64(VERSION));
    });
    rcgen::CustomExtension::from_oid_content(IDENTITY_MARKER_OID, value)
}

/// Whether a parsed certificate carries the attestation identity marker
/// (once or more: a duplicate counts too).
pub fn is_attestation_identity(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    let Ok(oid) = x509_parser::der_parser::oid::Oid::from(IDENTITY_MARKER_OID) else {
        return false;
    };
    cert.extensions()
        .iter()
        .any(|extension| extension.oid == oid)
}

/// [`is_attestation_identity`] of a DER certificate; false for bytes that
/// are not one.
pub fn der_is_attestation_identity(cert_der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(cert_der)
        .is_ok_and(|(_, cert)| is_attestation_identity(&cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GrantExtension {
        GrantExtension {
            grant_id: "0b7a4a3e-6c8b-4d0e-9d55-2f0c7b4c1e11".to_owned(),
            task_id: "build-42".to_owned(),
            entitlement: "ci-publish".to_owned(),
            actions: vec!["publish:artifacts".to_owned(), "read:source".to_owned()],
            epoch: "5f0c1d2e3a4b5c6d".to_owned(),
            break_glass: false,
            parent_grant_ids: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(GrantExtension::from_der(&sample().to_der()), Ok(sample()));
        let break_glass = GrantExtension {
            break_glass: true,
            ..sample()
        };
        assert_eq!(
            GrantExtension::from_der(&break_glass.to_der()),
            Ok(break_glass.clone())
        );
        assert_eq!(
            break_glass.to_der().len(),
            sample().to_der().len() + 3,
            "one BOOLEAN, only when true"
        );
        let delegated = GrantExtension {
            parent_grant_ids: vec![
                "5d3c2b1a-6c8b-4d0e-9d55-2f0c7b4c1e11".to_owned(),
                "a1b2c3d4-6c8b-4d0e-9d55-2f0c7b4c1e11".to_owned(),
            ],
            ..sample()
        };
        assert_eq!(
            GrantExtension::from_der(&delegated.to_der()),
            Ok(delegated.clone())
        );
        let both = GrantExtension {
            break_glass: true,
            ..delegated
        };
        assert_eq!(GrantExtension::from_der(&both.to_der()), Ok(both));
    }

    #[test]
    fn oid_string_matches_arcs() {
        let dotted: Vec<String> = GRANT_EXTENSION_OID.iter().map(u64::to_string).collect();
        assert_eq!(dotted.join("."), GRANT_EXTENSION_OID_STR);
        assert!(GRANT_EXTENSION_OID.iter().all(|&arc| arc < (1 << 28)));
        let dotted: Vec<String> = IDENTITY_MARKER_OID.iter().map(u64::to_string).collect();
        assert_eq!(dotted.join("."), IDENTITY_MARKER_OID_STR);
        assert!(IDENTITY_MARKER_OID.iter().all(|&arc| arc < (1 << 28)));
        assert_ne!(IDENTITY_MARKER_OID, GRANT_EXTENSION_OID);
    }

    #[test]
    fn later_fields_are_ignored_and_bad_input_rejected() {
        let extended = yasna::construct_der(|writer| {
            writer.write_sequence(|writer| {
                writer.next().write_u64(1);
                writer.next().write_utf8_string("g");
                writer.next().write_utf8_string("t");
                writer.next().write_utf8_string("e");
                writer
                    .next()
                    .write_sequence_of(|w| w.next().write_utf8_string("a"));
                writer.next().write_utf8_string("a future field");
            })
        });
        assert_eq!(GrantExtension::from_der(&extended).unwrap().actions, ["a"]);

        let v2 = yasna::construct_der(|writer| {
            writer.write_sequence(|writer| writer.next().write_u64(2))
        });
        assert_eq!(
            GrantExtension::from_der(&v2),
            Err(ExtensionError::UnsupportedVersion(2))
        );
        assert_eq!(
            GrantExtension::from_der(b"\x30\x00"),
            Err(ExtensionError::Malformed)
        );
        assert_eq!(
            GrantExtension::from_der(b""),
            Err(ExtensionError::Malformed)
        );
        let mut truncated = sample().to_der();
        truncated.pop();
        assert_eq!(
            GrantExtension::from_der(&truncated),
            Err(ExtensionError::Malformed)
        );
    }
}

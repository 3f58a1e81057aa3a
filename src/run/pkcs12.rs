//! A PKCS#12 trust store (RFC 7292) for Java, which cannot read a PEM bundle: one unencrypted
//! certificate bag per certificate, each marked trusted for any purpose with the attribute Java's
//! `PKCS12KeyStore` reads for trusted-certificate entries, and no MAC (Java 8u301/11.0.12/17+
//! load such a store without a password).

/// DER: a tag, its length, its content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A SET OF with one element (so already in DER order).
fn set1(part: &[u8]) -> Vec<u8> {
    tlv(0x31, part)
}

/// `[0] EXPLICIT`.
fn explicit0(inner: &[u8]) -> Vec<u8> {
    tlv(0xa0, inner)
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            groups.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        body.extend(groups.iter().rev());
    }
    tlv(0x06, &body)
}

const DATA: &[u64] = &[1, 2, 840, 113_549, 1, 7, 1];
const CERT_BAG: &[u64] = &[1, 2, 840, 113_549, 1, 12, 10, 1, 3];
const X509_CERTIFICATE: &[u64] = &[1, 2, 840, 113_549, 1, 9, 22, 1];
const FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113_549, 1, 9, 20];
/// Oracle's "trusted key usage" attribute: what a trusted-certificate entry may be used for.
const TRUSTED_KEY_USAGE: &[u64] = &[2, 16, 840, 1, 113_894, 746_875, 1, 1];
const ANY_EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37, 0];

/// `ContentInfo` of type `data` wrapping `content`.
fn data(content: &[u8]) -> Vec<u8> {
    seq(&[&oid(DATA), &explicit0(&tlv(0x04, content))])
}

fn cert_bag(der: &[u8], alias: &str) -> Vec<u8> {
    let bag = seq(&[&oid(X509_CERTIFICATE), &explicit0(&tlv(0x04, der))]);
    let bmp: Vec<u8> = alias.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let name = seq(&[&oid(FRIENDLY_NAME), &set1(&tlv(0x1e, &bmp))]);
    let usage = seq(&[&oid(TRUSTED_KEY_USAGE), &set1(&oid(ANY_EXTENDED_KEY_USAGE))]);
    // DER orders a SET OF by encoding: compare the two attributes.
    let attrs = if name <= usage {
        [name, usage].concat()
    } else {
        [usage, name].concat()
    };
    seq(&[&oid(CERT_BAG), &explicit0(&bag), &tlv(0x31, &attrs)])
}

/// The trust store holding every certificate in the PEM `bundle` (other blocks are skipped).
pub(crate) fn trust_store(bundle: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bags: Vec<u8> = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .filter_map(Result::ok)
        .enumerate()
        .flat_map(|(i, der)| cert_bag(&der, &format!("intentgate-run-{i}")))
        .collect();
    let safe_contents = tlv(0x30, &bags);
    let auth_safe = tlv(0x30, &data(&safe_contents));
    seq(&[&tlv(0x02, &[3]), &data(&auth_safe)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_and_lengths_encode_as_der() {
        // 1.2.840.113549.1.7.1 (id-data), as every PKCS#12 file carries it.
        assert_eq!(
            oid(DATA),
            [
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01
            ]
        );
        assert_eq!(
            oid(TRUSTED_KEY_USAGE),
            [
                0x06, 0x0c, 0x60, 0x86, 0x48, 0x01, 0x86, 0xf9, 0x66, 0xad, 0xca, 0x7b, 0x01, 0x01
            ]
        );
        assert_eq!(tlv(0x04, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn a_store_holds_one_bag_per_certificate() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let bundle = format!("{}{}", a.cert.pem(), b.cert.pem());
        let store = trust_store(&bundle);
        assert_eq!(store[0], 0x30);
        let count = |needle: &[u8]| store.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(&oid(CERT_BAG)), 2);
        assert_eq!(count(a.cert.der()), 1);
        assert_eq!(count(b.cert.der()), 1);
    }
}

//! Tamper evidence: each drill report is signed (ed25519) over its canonical form and names
//! the hash of the previous report of the same plan. [`verify`] walks the reports of each
//! plan in order and names the first broken link: a report edited after signing, one missing
//! from the chain (removed), reports out of order (swapped), or one signed by another key.
//!
//! The canonical form is the report's JSON with object keys sorted and no whitespace, the
//! `signature` field left out; formatting (indentation) is therefore not part of what is
//! signed, every value is.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use serde_json::Value;

use super::schema::{DrillEvidence, Signature, SCHEMA};

/// Keys sorted, no whitespace: the same bytes for the same values however the file was
/// formatted.
pub fn canonical(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                out.push(b'{');
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(serde_json::to_string(k).expect("key").as_bytes());
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// `blake3:<hex>` of a report's canonical form, signature included: what the next report's
/// `chain.prev` names.
pub fn hash_value(v: &Value) -> String {
    format!("blake3:{}", blake3::hash(&canonical(v)).to_hex())
}

pub fn hash(ev: &DrillEvidence) -> String {
    hash_value(&serde_json::to_value(ev).expect("report serializes"))
}

/// Signs `ev` (replacing any signature) with `key`.
pub fn sign(ev: &mut DrillEvidence, key: &SigningKey) {
    ev.signature = None;
    let body = canonical(&serde_json::to_value(&*ev).expect("report serializes"));
    let sig = key.sign(&body);
    ev.signature = Some(Signature {
        algorithm: "ed25519".into(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        value: hex::encode(sig.to_bytes()),
    });
}

/// The bytes of a report file (pretty JSON, newline at the end).
pub fn to_file_bytes(ev: &DrillEvidence) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(ev).expect("report serializes");
    b.push(b'\n');
    b
}

/// Checks the signature of a report as read (its JSON value): the public key it names, or
/// why it does not verify.
pub fn check_signature(v: &Value) -> Result<VerifyingKey, String> {
    let mut body = v.clone();
    let sig = body
        .as_object_mut()
        .and_then(|m| m.remove("signature"))
        .ok_or("it has no signature")?;
    let sig: Signature =
        serde_json::from_value(sig).map_err(|e| format!("its signature is malformed: {e}"))?;
    if sig.algorithm != "ed25519" {
        return Err(format!("unknown signature algorithm {:?}", sig.algorithm));
    }
    let key: [u8; 32] = hex::decode(&sig.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("its public key is not 32 bytes of hex")?;
    let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("its public key: {e}"))?;
    let value: [u8; 64] = hex::decode(&sig.value)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("its signature is not 64 bytes of hex")?;
    key.verify(
        &canonical(&body),
        &ed25519_dalek::Signature::from_bytes(&value),
    )
    .map_err(|_| {
        "its signature does not match its content: the report was edited after it was signed"
            .to_string()
    })?;
    Ok(key)
}

/// One report as found: where, the sequence number its file name states (report
/// directories), and its parsed JSON (or why it could not be read).
#[derive(Debug, Clone)]
pub struct Found {
    pub source: String,
    pub name_seq: Option<u64>,
    pub value: Result<Value, String>,
}

/// The sequence number in a report file name `<seq>-<id>.json`.
pub fn seq_of_name(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

/// What kind of break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Break {
    /// Not readable as a report, or its signature does not match its content.
    Edited,
    /// A report is missing between two others.
    Removed,
    /// Reports out of order (a file holds another position's report).
    Reordered,
    /// Signed by a key other than the trusted one.
    OtherKey,
}

/// The first broken link of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct BrokenLink {
    pub kind: Break,
    /// The report (file or repository object) where the break was found.
    pub source: String,
    pub seq: Option<u64>,
    pub report_id: Option<String>,
    pub message: String,
}

/// One plan's chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStatus {
    pub plan: String,
    pub reports: usize,
    /// The newest intact report's hash (what the next report will name).
    pub head: Option<String>,
    pub first_broken: Option<BrokenLink>,
}

impl ChainStatus {
    pub fn intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Whether a JSON value is a drill report (period reports share directories with them).
pub fn is_drill_report(v: &Value) -> bool {
    v.get("schema").and_then(Value::as_str) == Some(SCHEMA)
}

/// Verifies the reports, chain by chain (one per plan), in the order given (file names
/// sorted; repository objects by sequence number). `trusted`: the key every report must be
/// signed with; `None` trusts the key of each chain's first report.
pub fn verify(found: &[Found], trusted: Option<&VerifyingKey>) -> Vec<ChainStatus> {
    let mut by_plan: BTreeMap<String, Vec<&Found>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for f in found {
        match &f.value {
            Ok(v) => {
                let plan = v
                    .get("plan")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                by_plan.entry(plan).or_default().push(f);
            }
            Err(_) => unreadable.push(f),
        }
    }
    let mut out = Vec::new();
    for f in unreadable {
        out.push(ChainStatus {
            plan: String::new(),
            reports: 1,
            head: None,
            first_broken: Some(BrokenLink {
                kind: Break::Edited,
                source: f.source.clone(),
                seq: f.name_seq,
                report_id: None,
                message: format!(
                    "{} is not a readable report: {}",
                    f.source,
                    f.value.as_ref().err().cloned().unwrap_or_default()
                ),
            }),
        });
    }
    for (plan, items) in by_plan {
        out.push(verify_one(plan, &items, trusted));
    }
    out
}

fn verify_one(plan: String, items: &[&Found], trusted: Option<&VerifyingKey>) -> ChainStatus {
    let mut status = ChainStatus {
        plan: plan.clone(),
        reports: items.len(),
        head: None,
        first_broken: None,
    };
    let mut key: Option<VerifyingKey> = trusted.copied();
    // (seq, hash, report id) of the previous report
    let mut prev: Option<(u64, String, String)> = None;
    for f in items {
        let v = f.value.as_ref().expect("readable");
        let seq = v.pointer("/chain/seq").and_then(Value::as_u64);
        let id = v
            .get("report_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let broken = |kind, message: String| BrokenLink {
            kind,
            source: f.source.clone(),
            seq,
            report_id: id.clone(),
            message,
        };
        let name = format!(
            "report {} (plan {plan}, seq {})",
            id.as_deref().unwrap_or("?"),
            seq.map(|s| s.to_string()).unwrap_or("?".into())
        );
        let signer = match check_signature(v) {
            Ok(k) => k,
            Err(e) => {
                status.first_broken = Some(broken(
                    Break::Edited,
                    format!("{name} in {}: {e}", f.source),
                ));
                return status;
            }
        };
        match key {
            Some(k) if k != signer => {
                status.first_broken = Some(broken(
                    Break::OtherKey,
                    format!(
                        "{name} in {} is signed by another key ({}) than the repository's ({}): it was re-signed or forged",
                        f.source,
                        short_key(&signer),
                        short_key(&k)
                    ),
                ));
                return status;
            }
            Some(_) => {}
            None => key = Some(signer),
        }
        let Some(seq) = seq else {
            status.first_broken = Some(broken(
                Break::Edited,
                format!("{name} in {} has no chain.seq", f.source),
            ));
            return status;
        };
        if let Some(n) = f.name_seq {
            if n != seq {
                status.first_broken = Some(broken(
                    Break::Reordered,
                    format!(
                        "{} should hold report seq {n} of plan {plan} but holds seq {seq} ({}): reports were swapped or renamed",
                        f.source,
                        id.as_deref().unwrap_or("?")
                    ),
                ));
                return status;
            }
        }
        let prev_named = v
            .pointer("/chain/prev")
            .and_then(Value::as_str)
            .map(str::to_string);
        match &prev {
            None => {
                if seq != 1 {
                    status.first_broken = Some(broken(
                        Break::Removed,
                        format!(
                            "the chain of plan {plan} starts at {name}: reports 1 to {} are missing (removed)",
                            seq - 1
                        ),
                    ));
                    return status;
                }
            }
            Some((pseq, phash, pid)) => {
                if seq > pseq + 1 {
                    status.first_broken = Some(broken(
                        Break::Removed,
                        format!(
                            "{name} in {} follows report {pid} (seq {pseq}): {} between them {} missing (removed)",
                            f.source,
                            if seq - pseq == 2 { format!("report seq {}", pseq + 1) } else { format!("reports seq {} to {}", pseq + 1, seq - 1) },
                            if seq - pseq == 2 { "is" } else { "are" }
                        ),
                    ));
                    return status;
                }
                if seq <= *pseq {
                    status.first_broken = Some(broken(
                        Break::Reordered,
                        format!(
                            "{name} in {} comes after report {pid} (seq {pseq}): reports are out of order (swapped)",
                            f.source
                        ),
                    ));
                    return status;
                }
                if prev_named.as_deref() != Some(phash.as_str()) {
                    status.first_broken = Some(broken(
                        Break::Removed,
                        format!(
                            "{name} in {} names a previous report other than {pid} (seq {pseq}): the report it followed was replaced or removed",
                            f.source
                        ),
                    ));
                    return status;
                }
            }
        }
        let h = hash_value(v);
        status.head = Some(h.clone());
        prev = Some((seq, h, id.unwrap_or_default()));
    }
    status
}

pub fn short_key(k: &VerifyingKey) -> String {
    hex::encode(&k.to_bytes()[..8])
}

/// Parses a public key given as hex (what `report pubkey` prints).
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let s = s.trim();
    let s = s.strip_prefix("ed25519:").unwrap_or(s);
    let b: [u8; 32] = hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a public key is 64 hex characters (what `lifeboat report pubkey` prints)")?;
    VerifyingKey::from_bytes(&b).map_err(|e| format!("not an ed25519 public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signed(seq: u64, prev: Option<String>, key: &SigningKey) -> Value {
        let mut v = json!({
            "schema": SCHEMA, "report_id": format!("r{seq}"), "plan": "p",
            "rto": {"measured_secs": 0.1 + seq as f64 / 3.0, "met": true},
            "chain": {"seq": seq, "prev": prev},
        });
        let body = canonical(&v);
        v["signature"] = json!({
            "algorithm": "ed25519",
            "public_key": hex::encode(key.verifying_key().to_bytes()),
            "value": hex::encode(key.sign(&body).to_bytes()),
        });
        v
    }

    fn found(vs: &[Value]) -> Vec<Found> {
        vs.iter()
            .map(|v| Found {
                source: v["report_id"].as_str().unwrap().into(),
                name_seq: None,
                value: Ok(v.clone()),
            })
            .collect()
    }

    #[test]
    fn canonical_form_sorts_keys_and_ignores_formatting() {
        let a: Value =
            serde_json::from_str("{\"b\": [1, {\"z\": 1, \"a\": 2}], \"a\": \"x\"}").unwrap();
        assert_eq!(canonical(&a), br#"{"a":"x","b":[1,{"a":2,"z":1}]}"#);
        let key = SigningKey::from_bytes(&[1; 32]);
        let v = signed(1, None, &key);
        let pretty: Value =
            serde_json::from_str(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
        assert!(check_signature(&pretty).is_ok());
        let mut edited = v.clone();
        edited["plan"] = json!("q");
        assert!(check_signature(&edited).unwrap_err().contains("edited"));
    }

    #[test]
    fn chains_verify_and_name_their_first_break() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut vs = vec![signed(1, None, &key)];
        for seq in 2..=4 {
            let prev = hash_value(vs.last().unwrap());
            vs.push(signed(seq, Some(prev), &key));
        }
        let ok = verify(&found(&vs), Some(&key.verifying_key()));
        assert!(ok[0].intact() && ok[0].reports == 4, "{ok:?}");
        assert_eq!(ok[0].head.as_deref(), Some(hash_value(&vs[3]).as_str()));
        // removed
        let mut gap = vs.clone();
        gap.remove(1);
        let b = verify(&found(&gap), None).remove(0).first_broken.unwrap();
        assert_eq!((b.kind, b.seq), (Break::Removed, Some(3)));
        // the first removed
        let b = verify(&found(&vs[1..]), None)
            .remove(0)
            .first_broken
            .unwrap();
        assert_eq!((b.kind, b.seq), (Break::Removed, Some(2)));
        // out of order
        let mut swapped = vs.clone();
        swapped.swap(1, 2);
        let b = verify(&found(&swapped), None)
            .remove(0)
            .first_broken
            .unwrap();
        assert_eq!(
            b.kind,
            Break::Removed,
            "seq 3 after seq 1 is a gap first: {b:?}"
        );
        // replaced by a validly signed report that does not follow its predecessor
        let mut replaced = vs.clone();
        replaced[2] = signed(3, Some("blake3:00".into()), &key);
        let b = verify(&found(&replaced), None)
            .remove(0)
            .first_broken
            .unwrap();
        assert_eq!((b.kind, b.seq), (Break::Removed, Some(3)));
        // another key
        let other = SigningKey::from_bytes(&[2; 32]);
        let mut forged = vs.clone();
        forged[3] = signed(4, Some(hash_value(&vs[2])), &other);
        let b = verify(&found(&forged), Some(&key.verifying_key()))
            .remove(0)
            .first_broken
            .unwrap();
        assert_eq!((b.kind, b.seq), (Break::OtherKey, Some(4)));
        assert_eq!(
            parse_public_key(&hex::encode(key.verifying_key().to_bytes())).unwrap(),
            key.verifying_key()
        );
        assert!(parse_public_key("abc").is_err());
    }
}

//! Reads a pod from an AdmissionReview keeping only what [`super::mutate`] reads.
//!
//! A pod's JSON is mostly what the webhook never looks at: images, probes, resources, commands,
//! `managedFields`, `last-applied-configuration` annotations of other tools. Building a
//! `serde_json::Value` tree of all of it, copying and freeing it, was most of an admission's CPU.
//! Here every byte is still scanned (the JSON must be well-formed), but only the fields listed in
//! [`POD`] become values; the rest is skipped with [`IgnoredAny`] and costs no allocation.
//!
//! The result is an ordinary `Value`, so `mutate` runs unchanged on it and decides exactly as on
//! the whole pod: every field it reads is kept with its value as sent, whatever its type (a
//! field of the wrong type is kept whole, so the same denial names it), list items keep their
//! positions (the patch addresses containers by index), and a field whose content `mutate` does
//! not read but whose presence it tests is kept as `null`. `tests/pod_props.rs` checks that
//! `mutate` gives the same answer on the pruned pod as on the whole one for generated pods.
//!
//! Two differences are outside `mutate`, both in fields it does not read, and both more lenient:
//! a skipped string is checked for JSON syntax but not decoded, so an unpaired UTF-16 surrogate
//! escape (`"\ud800"`) there no longer makes the review malformed (an API server never sends
//! one); and serde_json skips a value without recursion, so nesting past its recursion limit
//! (128) there no longer refuses the review.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What of a JSON value to keep.
#[derive(Debug)]
pub enum Keep {
    /// The whole value.
    All,
    /// An object's listed fields, each by its own rule; other fields are skipped. A value that
    /// is not an object is kept whole.
    Fields(&'static [(&'static str, Keep)]),
    /// A list, each item by the rule; a value that is not a list is kept whole.
    Items(&'static Keep),
    /// Only that the field is there: its value is skipped and kept as `null`.
    Presence,
}

const ENV_VAR: Keep = Keep::Fields(&[("name", Keep::All), ("value", Keep::All)]);
const MOUNT: Keep = Keep::Fields(&[("name", Keep::All), ("mountPath", Keep::All)]);
const CONTAINER: Keep = Keep::Fields(&[
    ("name", Keep::All),
    ("env", Keep::Items(&ENV_VAR)),
    ("volumeMounts", Keep::Items(&MOUNT)),
]);
const VOLUME: Keep = Keep::Fields(&[("name", Keep::All), ("projected", Keep::Presence)]);

/// What `mutate` (and the review's log fields) read of a pod.
pub const POD: Keep = Keep::Fields(&[
    (
        "metadata",
        Keep::Fields(&[
            ("name", Keep::All),
            ("generateName", Keep::All),
            ("namespace", Keep::All),
            ("annotations", Keep::All),
            ("labels", Keep::All),
        ]),
    ),
    (
        "spec",
        Keep::Fields(&[
            ("containers", Keep::Items(&CONTAINER)),
            ("initContainers", Keep::Items(&CONTAINER)),
            ("volumes", Keep::Items(&VOLUME)),
            ("serviceAccountName", Keep::All),
            ("serviceAccount", Keep::All),
            // Windows: spec.os, the OS node labels, a required node affinity.
            ("os", Keep::All),
            ("nodeSelector", Keep::All),
            (
                "affinity",
                Keep::Fields(&[(
                    "nodeAffinity",
                    Keep::Fields(&[("requiredDuringSchedulingIgnoredDuringExecution", Keep::All)]),
                )]),
            ),
        ]),
    ),
]);

/// A pod read by the [`POD`] rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedPod(pub Value);

impl<'de> Deserialize<'de> for PrunedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Prune(&POD).deserialize(d).map(PrunedPod)
    }
}

/// A pod's JSON read by the [`POD`] rule.
pub fn pod_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<PrunedPod>(bytes).map(|p| p.0)
}

/// Reads one value by a [`Keep`] rule.
#[derive(Clone, Copy)]
pub struct Prune(pub &'static Keep);

impl<'de> DeserializeSeed<'de> for Prune {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Keep::All => Value::deserialize(d),
            Keep::Presence => IgnoredAny::deserialize(d).map(|_| Value::Null),
            Keep::Fields(_) | Keep::Items(_) => d.deserialize_any(self),
        }
    }
}

// Scalars become what `Value` makes of them; objects and lists follow the rule.
impl<'de> Visitor<'de> for Prune {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        match self.0 {
            Keep::Items(item) => {
                while let Some(v) = seq.next_element_seed(Prune(item))? {
                    items.push(v);
                }
            }
            _ => {
                while let Some(v) = seq.next_element::<Value>()? {
                    items.push(v);
                }
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        match self.0 {
            Keep::Fields(fields) => {
                while let Some(key) = map.next_key::<KeyName>()? {
                    match fields.iter().find(|(name, _)| *name == key.0) {
                        Some((_, rule)) => {
                            let v = map.next_value_seed(Prune(rule))?;
                            object.insert(key.0.into_owned(), v);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
            }
            _ => {
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    object.insert(k, v);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// An object key, decoded (escapes resolved) as `Value` decodes it; borrowed from the input
/// when it has no escapes, so that a skipped field's key costs no allocation.
struct KeyName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> Visitor<'de> for Key {
            type Value = KeyName<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyName<'de>, E> {
                Ok(KeyName(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<KeyName<'de>, E> {
                Ok(KeyName(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<KeyName<'de>, E> {
                Ok(KeyName(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pruned(v: &Value) -> Value {
        pod_from_slice(&serde_json::to_vec(v).unwrap()).unwrap()
    }

    #[test]
    fn keeps_what_mutate_reads_and_nothing_else() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u",
                         "annotations": {"a": "1", "big": "x"}, "labels": {"l": "v"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "containers": [{"name": "app", "image": "i", "args": ["a"],
                                "env": [{"name": "A", "value": "1"},
                                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                                "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}],
                                "resources": {"limits": {"cpu": "1"}}}],
                "volumes": [{"name": "v", "projected": {"sources": []}}, {"name": "w", "emptyDir": {}}],
                "serviceAccountName": "sa",
                "affinity": {"podAntiAffinity": {"x": 1},
                             "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"t": 1},
                                              "preferredDuringSchedulingIgnoredDuringExecution": []}},
                "tolerations": [{"key": "k"}]
            },
            "status": {"phase": "Pending"}
        });
        assert_eq!(
            pruned(&pod),
            json!({
                "metadata": {"name": "p", "namespace": "shop",
                             "annotations": {"a": "1", "big": "x"}, "labels": {"l": "v"}},
                "spec": {
                    "containers": [{"name": "app",
                                    "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                    "volumes": [{"name": "v", "projected": null}, {"name": "w"}],
                    "serviceAccountName": "sa",
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"t": 1}}}
                }
            })
        );
    }

    /// What `mutate` answers on the whole pod and on the pruned one.
    fn both(pod: &Value) -> (String, String) {
        use crate::webhook::mutate::{MutateConfig, Scope, TokenLookup, mutate};
        let config = MutateConfig {
            default_oidc_provider_arn: Some("acs:ram::1:oidc-provider/p".into()),
            ..MutateConfig::default()
        };
        let answer = |p: &Value| {
            format!(
                "{:?}",
                mutate(p, &Scope::pod_only(Some("shop")), &config, |_| {
                    TokenLookup::Standalone
                })
            )
        };
        (answer(pod), answer(&pruned(pod)))
    }

    #[test]
    fn mutate_answers_the_same_on_the_pruned_pod() {
        let pod = json!({
            "metadata": {"name": "p", "annotations": {
                "idaas-projector.io/m2m-token": "t",
                "idaas-projector.io/role-arn": "acs:ram::1:role/r"}},
            "spec": {
                "containers": [{"name": "app", "image": "i",
                    "env": [{"name": "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
                             "value": "/var/run/secrets/idaas-projector.io/token"},
                            {"name": "ALIBABA_CLOUD_ROLE_ARN", "value": "other"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        });
        let (whole, pruned) = both(&pod);
        assert_eq!(whole, pruned);
        assert!(
            whole.contains("sets ALIBABA_CLOUD_ROLE_ARN itself"),
            "{whole}"
        );
        assert!(
            !whole.contains("sets ALIBABA_CLOUD_OIDC_TOKEN_FILE itself"),
            "{whole}"
        );
        // Windows by node affinity.
        let mut windows = pod.clone();
        windows["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}]}}});
        let (whole, pruned) = both(&windows);
        assert_eq!(whole, pruned);
        assert!(whole.contains(r"C:\\var"), "{whole}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_kept_whole() {
        for odd in [
            json!({"metadata": ["a"], "spec": "s"}),
            json!({"spec": {"containers": {"name": "app", "x": [1]}, "volumes": 7}}),
            json!({"spec": {"containers": [3, "c", null, {"env": {"k": "v"}, "volumeMounts": true}]}}),
            json!([1, {"a": 2}]),
            json!("pod"),
            json!(null),
            json!({"metadata": {"annotations": [1, 2], "labels": "l"}}),
            json!({"spec": {"containers": [{"name": 5, "env": [1, {"name": ["x"], "value": {"v": 1}}]}]}}),
        ] {
            assert_eq!(pruned(&odd), odd, "{odd}");
        }
    }

    #[test]
    fn numbers_strings_and_duplicate_keys_as_value_reads_them() {
        let text = br#"{"metadata": {"name": "a\u00e9\"b", "name": "second",
                        "annotations": {"n": 1.5e300, "i": -3, "u": 18446744073709551615}}}"#;
        let whole: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(pod_from_slice(text).unwrap(), whole);
    }

    #[test]
    fn malformed_json_is_an_error_anywhere() {
        for bad in [
            &br#"{"spec": {"containers": [{"image": "i",}]}}"#[..],
            br#"{"status": {"phase": "P"}"#,
            br#"{"metadata": {"name": "p"}} x"#,
            br#"{"spec": {"tolerations": [01]}}"#,
        ] {
            assert!(
                pod_from_slice(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! Bad input never crashes the webhook: arbitrary bytes and arbitrary JSON in every position of
//! an AdmissionReview get an answer or a 400, never a panic.

use idaas_projector::testing::review_now;
use idaas_projector::webhook::mutate::MutateConfig;
use idaas_projector::webhook::review::{Standalone, Via};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9./:,@ -]{0,12}".prop_map(Value::String),
        Just(json!("idaas-projector.io/m2m-token")),
        Just(json!("acs:ram::1:role/x")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("env".to_owned()),
                    Just("volumeMounts".to_owned()),
                    Just("annotations".to_owned()),
                    Just("idaas-projector.io/m2m-token".to_owned()),
                    Just("idaas-projector.io/only-containers".to_owned()),
                    Just("containers".to_owned()),
                    Just("initContainers".to_owned()),
                    Just("volumes".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pod_with(annotations: Value, spec: Value) -> Vec<u8> {
    let pod = json!({"metadata": {"name": "p", "annotations": annotations}, "spec": spec});
    serde_json::to_vec(&idaas_projector::testing::pod_review("u", pod)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for via in [Via::Annotation, Via::Namespace] {
            let _ = review_now(&body, via, &MutateConfig::default(), &Standalone);
        }
    }

    #[test]
    fn arbitrary_json_in_the_pod(annotations in arb_json(), spec in arb_json()) {
        let body = pod_with(annotations, spec);
        prop_assert!(review_now(&body, Via::Annotation, &MutateConfig::default(), &Standalone).is_ok());
    }

    #[test]
    fn arbitrary_annotation_values(
        token in "[a-z.-]{0,10}",
        only in "[a-z, ]{0,10}",
        wait in "[0-9a-z]{0,5}",
        session in "[ -~]{0,70}",
    ) {
        let annotations = json!({
            "idaas-projector.io/m2m-token": token,
            "idaas-projector.io/role-arn": "acs:ram::1:role/r",
            "idaas-projector.io/oidc-provider-arn": "acs:ram::1:oidc-provider/p",
            "idaas-projector.io/only-containers": only,
            "idaas-projector.io/token-wait": wait,
            "idaas-projector.io/role-session-name": session,
        });
        let spec = json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]});
        let body = pod_with(annotations, spec);
        prop_assert!(review_now(&body, Via::Annotation, &MutateConfig::default(), &Standalone).is_ok());
    }
}

//! Generated pod shapes against the webhook's contract (docs/design.md and the design contract:
//! "Pod annotations (input)", "Opt-in levels", "What the webhook injects" and "Admission
//! answers").
//!
//! `arb_case()` builds an opted-in (or not) pod from a blueprint: 1-4 containers, 0-3 init
//! containers (some native sidecars), env lists that sometimes set the very variables the webhook
//! injects (with `value`, `valueFrom` or nothing), envFrom, volumes of several kinds, mounts
//! (sometimes at the webhook's mount path, sometimes of the webhook's volume), security contexts,
//! Windows pods (by `spec.os.name`, either OS nodeSelector label or a required node affinity), the
//! webhook's annotations with valid and invalid values (`role-arn` and `role-name` alone or
//! together), the opt-out label and the legacy routing label, unrelated annotations and labels,
//! fields Kubernetes does not have yet at every level, and `null` or empty lists where the webhook
//! appends. Each case also carries the M2MToken lookup answer, the server configuration, whether
//! the namespace is labelled `idaas-projector.io/injection: enabled`, and the pod's ServiceAccount
//! lookup (found with its own annotations, valid and invalid, that may opt the pod in and carry
//! settings; absent; or unavailable). In a labelled namespace the pod more often lacks its own
//! `m2m-token`, so that opting in by the ServiceAccount is exercised.
//!
//! Each property is checked on 10,000 generated cases:
//! 1. `mutate` and `review` never panic; `review` echoes the uid and agrees with `mutate` (through
//!    `/mutate/namespace` for a labelled namespace, with the case's ServiceAccount); the pod as
//!    `review` reads it (`webhook::prune`: only the fields `mutate` reads) gets the same answer
//!    from `mutate` as the whole pod.
//! 2. Idempotent: after the patch, a second `mutate` returns an empty patch and no denial.
//! 3. Every user-set env var (and envFrom, volume, mount) is kept as the user set it.
//! 4. Everything the webhook does not own (unknown fields included) is unchanged.
//! 5. The patched pod is valid where the webhook touched it; denials are one non-empty line.
//! 6. The pod is skipped, denied or injected exactly when the contract says so (the opt-out label
//!    first, then the pod's opt-in, then its ServiceAccount's; each setting from the pod, then the
//!    ServiceAccount, then the M2MToken, then the server), a denial names its cause (the
//!    annotation, and the ServiceAccount when it carries it), and the warnings include the
//!    contract's (pod-only annotations on a ServiceAccount, the legacy routing label).
//!
//! Generating a pod costs more than checking it in debug builds, so two proptest functions of
//! 10,000 cases each check three properties per pod (1, 2, 6 on the answer; 3, 4, 5 on the
//! patched pod): 20,000 pods per run.
//!
//! The contract's names are spelled out here as docs/design.md spells them, not imported from the
//! crate, so a rename fails this file (`contract_names_match_the_crate` ties the two).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use idaas_projector::testing::{FixedResolver, review_now};
use idaas_projector::webhook::annotations as crate_annotations;
use idaas_projector::webhook::mutate::{
    self as crate_mutate, AccountAnnotations, AccountLookup, MutateConfig, Mutation, PodState,
    Scope, TokenDefaults, TokenLookup, mutate,
};
use idaas_projector::webhook::review::Via;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// The contract's names (docs/design.md).

const M2M_TOKEN: &str = "idaas-projector.io/m2m-token";
const ROLE_ARN: &str = "idaas-projector.io/role-arn";
const ROLE_NAME: &str = "idaas-projector.io/role-name";
const OIDC_PROVIDER_ARN: &str = "idaas-projector.io/oidc-provider-arn";
const ROLE_SESSION_NAME: &str = "idaas-projector.io/role-session-name";
const STS_REGION: &str = "idaas-projector.io/sts-region";
const STS_VPC_ENDPOINT: &str = "idaas-projector.io/sts-vpc-endpoint";
const SKIP_CONTAINERS: &str = "idaas-projector.io/skip-containers";
const ONLY_CONTAINERS: &str = "idaas-projector.io/only-containers";
const TOKEN_WAIT: &str = "idaas-projector.io/token-wait";
const INJECTED: &str = "idaas-projector.io/injected";
/// Annotations read from pods only: on a ServiceAccount they only warn.
const POD_ONLY: [&str; 3] = [ROLE_SESSION_NAME, SKIP_CONTAINERS, ONLY_CONTAINERS];
/// `disabled` on a pod opts it out; `enabled` on a namespace routes its pods.
const INJECTION_LABEL: &str = "idaas-projector.io/injection";
/// The object-selector mode's old routing label: still routed, with a deprecation warning.
const LEGACY_INJECT_LABEL: &str = "idaas-projector.io/inject";
/// The node labels that name a node's operating system.
const OS_LABELS: [&str; 2] = ["kubernetes.io/os", "beta.kubernetes.io/os"];

const VOLUME: &str = "idaas-projector-token";
const MOUNT_PATH: &str = "/var/run/secrets/idaas-projector.io";
const TOKEN_FILE: &str = "/var/run/secrets/idaas-projector.io/token";
const WINDOWS_MOUNT_PATH: &str = r"C:\var\run\secrets\idaas-projector.io";
const WINDOWS_TOKEN_FILE: &str = r"C:\var\run\secrets\idaas-projector.io\token";
const WAIT_CONTAINER: &str = "idaas-projector-wait";

const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
const ENV_VPC_ENDPOINT: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
const INJECTED_ENV: [&str; 6] = [
    ENV_ROLE_ARN,
    ENV_OIDC_PROVIDER_ARN,
    ENV_OIDC_TOKEN_FILE,
    ENV_ROLE_SESSION_NAME,
    ENV_STS_REGION,
    ENV_VPC_ENDPOINT,
];

const INIT_IMAGE: &str = "registry.example.com/idaas-projector:props";
/// A container name no generated name can take (the generator's names have at most one '-'
/// before the de-duplication suffix, which is numeric).
const NO_SUCH_CONTAINER: &str = "no-such-container";

// ---------------------------------------------------------------------------------------------
// Blueprints: the random choices, resolved into a pod by `build`.

/// An annotation: absent, or a value and whether the contract accepts it.
type Ann = Option<(Value, bool)>;

/// A ServiceAccount's annotation (always a string): absent, or a value and whether the
/// contract accepts it.
type SaAnn = Option<(String, bool)>;

/// One level's `role-arn` and `role-name` (both set is a denial).
#[derive(Debug, Clone)]
struct RoleBp<A> {
    arn: A,
    name: A,
}

#[derive(Debug, Clone)]
enum ListShape<T> {
    Absent,
    Null,
    Items(Vec<T>),
}

#[derive(Debug, Clone)]
enum EnvName {
    /// One of the six variables the webhook injects.
    Injected(usize),
    Other(String),
}

#[derive(Debug, Clone)]
enum EnvSource {
    Value(String),
    /// The value the webhook would inject for ALIBABA_CLOUD_OIDC_TOKEN_FILE.
    TokenFile,
    ValueFrom(Value),
    /// A bare `{"name": ...}`: an empty variable.
    Bare,
}

#[derive(Debug, Clone)]
struct EnvBp {
    name: EnvName,
    source: EnvSource,
    extra: Option<(String, Value)>,
}

#[derive(Debug, Clone)]
enum MountTarget {
    /// One of the pod's own volumes (skipped when it has none).
    User(Index),
    /// The webhook's volume name.
    Ours,
}

#[derive(Debug, Clone)]
enum MountPathBp {
    Random(String),
    Ours,
    OursTrailingSlash,
    Parent,
    Child,
}

#[derive(Debug, Clone)]
struct MountBp {
    target: MountTarget,
    path: MountPathBp,
    read_only: Option<bool>,
}

#[derive(Debug, Clone)]
enum NameBp {
    Random(String),
    /// The name of the injected init container.
    Wait,
    /// The name of the injected volume, as a container name (harmless).
    VolumeName,
}

#[derive(Debug, Clone)]
struct ContainerBp {
    name: NameBp,
    image: String,
    env: ListShape<EnvBp>,
    env_from: Option<Vec<Value>>,
    mounts: ListShape<MountBp>,
    security: Option<Value>,
    command: Option<Value>,
    sidecar: bool,
    extras: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
struct VolumeBp {
    ours_name: bool,
    name: String,
    source: (String, Value),
    extra: Option<(String, Value)>,
}

#[derive(Debug, Clone)]
enum ListBp {
    Existing(Vec<Index>, bool),
    WithUnknown(Vec<Index>),
    InvalidName,
    Blank(String),
}

#[derive(Debug, Clone)]
enum SelBp {
    All,
    Skip(ListBp),
    Only(ListBp),
    Both(ListBp, ListBp),
}

#[derive(Debug, Clone)]
struct AnnBp {
    m2m: Ann,
    role: RoleBp<Ann>,
    oidc: Ann,
    session: Ann,
    region: Ann,
    vpc: Ann,
    wait: Ann,
    selection: SelBp,
    injected: Option<String>,
    others: BTreeMap<String, String>,
}

/// The pod's ServiceAccount, with its `idaas-projector.io/*` annotations.
#[derive(Debug, Clone)]
struct AccountBp {
    name: String,
    m2m: SaAnn,
    role: RoleBp<SaAnn>,
    oidc: SaAnn,
    region: SaAnn,
    vpc: SaAnn,
    wait: SaAnn,
    /// Annotations read from pods only (any value: on a ServiceAccount they only warn).
    pod_only: BTreeMap<&'static str, String>,
    /// Other annotations of the project's prefix, which mean nothing.
    others: BTreeMap<String, String>,
}

/// The answer to the ServiceAccount lookup.
#[derive(Debug, Clone)]
enum AccountBpLookup {
    Found(Box<AccountBp>),
    Absent,
    /// Not known for now, with the message the webhook sends back.
    Unavailable(String),
}

/// What a pod in a labelled namespace leaves to its ServiceAccount.
#[derive(Debug, Clone, Copy)]
enum LeftToAccount {
    Nothing,
    /// No `m2m-token` on the pod.
    OptIn,
    /// No `m2m-token`, and none of the settings a ServiceAccount may carry.
    OptInAndSettings,
}

/// The pod's own labels the webhook reads.
#[derive(Debug, Clone)]
struct PodLabelsBp {
    /// `idaas-projector.io/injection` (`disabled` opts the pod out).
    injection: Option<&'static str>,
    /// The legacy `idaas-projector.io/inject` routing label.
    legacy: bool,
}

#[derive(Debug, Clone)]
enum PodName {
    Name(String),
    GenerateName(String),
    None,
}

#[derive(Debug, Clone)]
struct PodBp {
    name: PodName,
    meta_namespace: Option<String>,
    request_namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    our_labels: PodLabelsBp,
    ann: AnnBp,
    /// In a labelled namespace, what the pod leaves to its ServiceAccount.
    left_to_account: LeftToAccount,
    containers: Vec<ContainerBp>,
    init: ListShape<ContainerBp>,
    volumes: ListShape<VolumeBp>,
    pod_security: Option<Value>,
    node_selector: Option<BTreeMap<String, String>>,
    os: Option<&'static str>,
    affinity: Option<Value>,
    extras_pod: Vec<(String, Value)>,
    extras_meta: Vec<(String, Value)>,
    extras_spec: Vec<(String, Value)>,
    lookup: TokenLookup,
    config: MutateConfig,
    namespace_enabled: bool,
    account: AccountBpLookup,
    /// Whether `spec.serviceAccountName` names the ServiceAccount (else the pod leaves it unset).
    names_account: bool,
}

/// Which containers the pod's skip/only annotations select, as the test reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sel {
    All,
    Skip(Vec<String>),
    Only(Vec<String>),
}

impl Sel {
    fn selects(&self, name: &str) -> bool {
        match self {
            Sel::All => true,
            Sel::Skip(names) => !names.iter().any(|n| n == name),
            Sel::Only(names) => names.iter().any(|n| n == name),
        }
    }

    fn names(&self) -> &[String] {
        match self {
            Sel::All => &[],
            Sel::Skip(n) | Sel::Only(n) => n,
        }
    }
}

/// One generated input: the pod, the request namespace, the lookup answers, the configuration
/// and whether the namespace is labelled, plus what the generator knows about the annotations.
#[derive(Clone)]
struct Case {
    pod: Value,
    namespace: Option<String>,
    lookup: TokenLookup,
    config: MutateConfig,
    /// The namespace is labelled `idaas-projector.io/injection: enabled` (the request comes
    /// through `/mutate/namespace`).
    namespace_enabled: bool,
    /// The pod's ServiceAccount, as the webhook would look it up.
    account: AccountLookup,
    /// The pod's annotations whose values the contract rejects (empty: all valid).
    invalid_annotations: Vec<&'static str>,
    /// The ServiceAccount's annotations whose values the contract rejects.
    invalid_account_annotations: Vec<&'static str>,
    selection: Sel,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            concat!(
                "Case {{ namespace: {:?}, lookup: {:?}, config: {:?}, ",
                "namespace_enabled: {:?}, account: {:?}, ",
                "invalid_annotations: {:?}, invalid_account_annotations: {:?}, ",
                "selection: {:?},\n  pod: {} }}"
            ),
            self.namespace,
            self.lookup,
            self.config,
            self.namespace_enabled,
            self.account,
            self.invalid_annotations,
            self.invalid_account_annotations,
            self.selection,
            serde_json::to_string(&self.pod).unwrap()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// A regex strategy compiled once (a `&str` strategy compiles its regex again for every value,
/// which dominated the run time in debug builds).
fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern).unwrap().boxed()
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const LOWER_DIGITS: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UPPER_DIGITS_UNDERSCORE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
const DIGITS: &str = "0123456789";
const PRINTABLE: &str = concat!(
    " !\"#$%&'()*+,-./0123456789:;<=>?@",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
);
const RAM_NAME: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
const RAM_ROLE_NAME: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@";

/// A string from pieces `(alphabet, min, max)`: `min..=max` characters of the alphabet, or the
/// alphabet itself as a literal when `max` is 0. Drawn from one u64, which is far cheaper than a
/// regex strategy in debug builds; shrinking the seed to 0 gives every piece its minimum length.
fn text(pieces: &'static [(&'static str, usize, usize)]) -> BoxedStrategy<String> {
    any::<u64>()
        .prop_map(move |seed| {
            let mut state = seed;
            let mut next = move || {
                // splitmix64
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            };
            let mut out = String::new();
            for (i, &(alphabet, min, max)) in pieces.iter().enumerate() {
                if max == 0 {
                    out.push_str(alphabet);
                    continue;
                }
                let chars: Vec<char> = alphabet.chars().collect();
                let len = min + ((seed >> (8 * (i % 8))) & 0xff) as usize % (max - min + 1);
                for _ in 0..len {
                    out.push(chars[next() as usize % chars.len()]);
                }
            }
            out
        })
        .boxed()
}

/// A container, volume or object name: a DNS label with at most one '-'.
fn label() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text(&[(LOWER, 1, 1), (LOWER_DIGITS, 0, 5)]),
        1 => text(&[(LOWER, 1, 1), (LOWER_DIGITS, 0, 5), ("-", 0, 0), (LOWER_DIGITS, 1, 4)]),
    ]
    .boxed()
}

/// A small JSON value of any type, nested up to three levels (from a palette: a recursive
/// strategy cost more than the rest of a pod in debug builds).
fn small_json() -> impl Strategy<Value = Value> {
    (0u8..10, any::<i32>()).prop_map(|(kind, n)| match kind {
        0 => Value::Null,
        1 => json!(n % 2 == 0),
        2 => json!(n),
        3 => json!(format!("v{n}")),
        4 => json!([1, 2]),
        5 => json!({"a": {"b": [n, "x"]}}),
        6 => json!([{"k": n}, null]),
        7 => json!({}),
        8 => json!([]),
        _ => json!({"nested": {"deeper": {"n": n, "s": "with spaces / slashes ~0 ~1"}}}),
    })
}

/// Sometimes one unknown field (on an env entry or a volume).
fn extra_field() -> impl Strategy<Value = Option<(String, Value)>> {
    let key = text(&[("x", 0, 0), (UPPER, 1, 1), (LOWER, 1, 5)]);
    prop_oneof![9 => Just(None), 1 => (key, small_json()).prop_map(Some)]
}

/// Fields Kubernetes does not have (yet).
fn unknown_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    vec(
        (
            prop_oneof![
                Just("x-unknown".to_owned()),
                Just("futureField".to_owned()),
                text(&[("x", 0, 0), (UPPER, 1, 1), (LOWER, 1, 6)]),
            ],
            small_json(),
        ),
        0..3,
    )
}

fn strs(values: &'static [&'static str]) -> BoxedStrategy<String> {
    proptest::sample::select(values)
        .prop_map(str::to_owned)
        .boxed()
}

fn json_strs(values: &'static [&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(values)
        .prop_map(|s| Value::String(s.to_owned()))
        .boxed()
}

fn padded(s: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (s, prop_oneof![8 => Just(""), 1 => Just(" ")]).prop_map(|(s, pad)| format!("{pad}{s}{pad}"))
}

fn list_bp() -> impl Strategy<Value = ListBp> {
    prop_oneof![
        30 => (vec(any::<Index>(), 1..4), any::<bool>()).prop_map(|(i, s)| ListBp::Existing(i, s)),
        1 => vec(any::<Index>(), 0..3).prop_map(ListBp::WithUnknown),
        1 => Just(ListBp::InvalidName),
        1 => prop_oneof![Just(String::new()), Just(" , ".to_owned())].prop_map(ListBp::Blank),
    ]
}

fn sel_bp() -> impl Strategy<Value = SelBp> {
    prop_oneof![
        60 => Just(SelBp::All),
        18 => list_bp().prop_map(SelBp::Skip),
        18 => list_bp().prop_map(SelBp::Only),
        1 => (list_bp(), list_bp()).prop_map(|(s, o)| SelBp::Both(s, o)),
    ]
}

/// A pod annotation: absent, valid or invalid (a string or another JSON type), by weight.
fn ann(
    weights: (u32, u32, u32),
    valid: BoxedStrategy<String>,
    invalid: BoxedStrategy<Value>,
) -> BoxedStrategy<Ann> {
    let (absent, good, bad) = weights;
    prop_oneof![
        absent => Just(None),
        good => valid.prop_map(|s| Some((Value::String(s), true))),
        bad => invalid.prop_map(|v| Some((v, false))),
    ]
    .boxed()
}

/// A ServiceAccount annotation: absent, valid or invalid, by weight.
fn sa_ann(
    weights: (u32, u32, u32),
    valid: BoxedStrategy<String>,
    invalid: BoxedStrategy<String>,
) -> BoxedStrategy<SaAnn> {
    let (absent, good, bad) = weights;
    prop_oneof![
        absent => Just(None),
        good => valid.prop_map(|s| Some((s, true))),
        bad => invalid.prop_map(|s| Some((s, false))),
    ]
    .boxed()
}

/// An invalid pod annotation: one of the invalid strings, or sometimes another JSON type.
fn pod_invalid(strings: BoxedStrategy<String>, other: Value) -> BoxedStrategy<Value> {
    prop_oneof![4 => strings.prop_map(Value::String), 1 => Just(other)].boxed()
}

// The values of each annotation, valid and invalid (as strings), for pods and ServiceAccounts
// alike.

fn m2m_valid() -> BoxedStrategy<String> {
    padded(prop_oneof![
        Just("payments".to_owned()),
        text(&[(LOWER, 1, 1), (LOWER_DIGITS, 0, 8)]),
        text(&[
            (LOWER, 1, 1),
            (LOWER_DIGITS, 0, 4),
            ("-", 0, 0),
            (LOWER_DIGITS, 1, 4),
            (".", 0, 0),
            (LOWER, 1, 4)
        ]),
    ])
    .boxed()
}

fn m2m_invalid() -> BoxedStrategy<String> {
    strs(&["Payments", "", "bad_name", "-x", "a..b", " "])
}

fn role_arn_valid() -> BoxedStrategy<String> {
    padded(text(&[
        ("acs:ram::", 0, 0),
        (DIGITS, 1, 16),
        (":role/", 0, 0),
        (RAM_ROLE_NAME, 1, 20),
    ]))
    .boxed()
}

fn role_arn_invalid() -> BoxedStrategy<String> {
    strs(&[
        "arn:aws:iam::1:role/x",
        "acs:ram::12x:role/a",
        "acs:ram::1:role/",
        "acs:ram::1:oidc-provider/a",
        "acs:ram::1:role/a b",
        "acs:ram:::role/a",
    ])
}

fn role_name_valid() -> BoxedStrategy<String> {
    padded(prop_oneof![
        3 => text(&[(RAM_ROLE_NAME, 1, 20)]),
        1 => text(&[(RAM_ROLE_NAME, 60, 64)]),
    ])
    .boxed()
}

fn role_name_invalid() -> BoxedStrategy<String> {
    prop_oneof![
        strs(&[
            "",
            " ",
            "a b",
            "x/y",
            "caf\u{e9}",
            "role:x",
            "acs:ram::1:role/a"
        ]),
        text(&[(RAM_ROLE_NAME, 65, 70)]),
    ]
    .boxed()
}

fn oidc_valid() -> BoxedStrategy<String> {
    padded(text(&[
        ("acs:ram::", 0, 0),
        (DIGITS, 1, 16),
        (":oidc-provider/", 0, 0),
        (RAM_NAME, 1, 20),
    ]))
    .boxed()
}

fn oidc_invalid() -> BoxedStrategy<String> {
    strs(&[
        "acs:ram::1:role/a",
        "acs:ram::1:oidc-provider/a@b",
        "acs:ram::1:oidc-provider/",
    ])
}

fn region_valid() -> BoxedStrategy<String> {
    strs(&[
        "cn-hangzhou",
        "ap-southeast-1",
        "cn-shanghai-finance-1",
        "us-west-1",
        " cn-beijing ",
    ])
}

fn region_invalid() -> BoxedStrategy<String> {
    strs(&["CN-hangzhou", "cn", "cn-", "hangzhou", "cn--x"])
}

fn vpc_valid() -> BoxedStrategy<String> {
    strs(&["true", "false", "TRUE", " false ", "True"])
}

fn vpc_invalid() -> BoxedStrategy<String> {
    strs(&["yes", "1", "", "on"])
}

fn wait_valid() -> BoxedStrategy<String> {
    strs(&[
        "false", "FALSE", "true", "2m", "90s", "1m30s", "1h", "1s", " 5m ", "10m",
    ])
}

fn wait_invalid() -> BoxedStrategy<String> {
    strs(&["0s", "2h", "500ms", "soon", "", "61m"])
}

/// A level's role: neither, `role-arn`, `role-name`, or both (each valid or not), by weight.
fn role_bp<A: fmt::Debug + Clone + 'static>(
    weights: (u32, u32, u32, u32),
    arn: BoxedStrategy<A>,
    name: BoxedStrategy<A>,
    none: A,
) -> BoxedStrategy<RoleBp<A>> {
    let (neither, by_arn, by_name, both) = weights;
    let n = none.clone();
    let m = none.clone();
    prop_oneof![
        neither => Just(RoleBp { arn: none.clone(), name: none }),
        by_arn => arn.clone().prop_map(move |arn| RoleBp { arn, name: n.clone() }),
        by_name => name.clone().prop_map(move |name| RoleBp { arn: m.clone(), name }),
        both => (arn, name).prop_map(|(arn, name)| RoleBp { arn, name }),
    ]
    .boxed()
}

/// The pod's `role-arn` and `role-name`.
fn pod_role() -> BoxedStrategy<RoleBp<Ann>> {
    let set = |valid: BoxedStrategy<String>, invalid: BoxedStrategy<Value>| {
        prop_oneof![
            98 => valid.prop_map(|s| Some((Value::String(s), true))),
            2 => invalid.prop_map(|v| Some((v, false))),
        ]
        .boxed()
    };
    role_bp(
        (12, 68, 17, 3),
        set(
            role_arn_valid(),
            pod_invalid(role_arn_invalid(), json!(["acs:ram::1:role/a"])),
        ),
        set(
            role_name_valid(),
            pod_invalid(role_name_invalid(), json!(7)),
        ),
        None,
    )
}

fn ann_bp() -> impl Strategy<Value = AnnBp> {
    let m2m = ann(
        (8, 91, 1),
        m2m_valid(),
        prop_oneof![
            m2m_invalid().prop_map(Value::String),
            Just(json!(7)),
            Just(json!(true)),
        ]
        .boxed(),
    );
    let oidc = ann(
        (40, 59, 1),
        oidc_valid(),
        oidc_invalid().prop_map(Value::String).boxed(),
    );
    let session = ann(
        (70, 29, 1),
        padded(text(&[(RAM_ROLE_NAME, 2, 64)])).boxed(),
        prop_oneof![
            json_strs(&["a", "has space", "caf\u{e9}-x", "x/y"]),
            re("[a-z]{65,70}").prop_map(Value::String),
        ]
        .boxed(),
    );
    let region = ann(
        (70, 29, 1),
        region_valid(),
        region_invalid().prop_map(Value::String).boxed(),
    );
    let vpc = ann(
        (70, 29, 1),
        vpc_valid(),
        vpc_invalid().prop_map(Value::String).boxed(),
    );
    let wait = ann(
        (60, 39, 1),
        wait_valid(),
        wait_invalid().prop_map(Value::String).boxed(),
    );
    let injected = prop_oneof![
        92 => Just(None),
        8 => prop_oneof![Just("0123456789abcdef".to_owned()), re("[0-9a-f]{16}")].prop_map(Some),
    ];
    let others = btree_map(
        prop_oneof![
            text(&[("example.com/", 0, 0), (LOWER, 1, 8)]),
            Just("idaas-projector.io/unknown-setting".to_owned()),
            Just("kubectl.kubernetes.io/last-applied-configuration".to_owned()),
        ],
        text(&[(PRINTABLE, 0, 12)]),
        0..3,
    );
    (
        (m2m, pod_role(), oidc, session),
        (region, vpc, wait, sel_bp()),
        injected,
        others,
    )
        .prop_map(
            |((m2m, role, oidc, session), (region, vpc, wait, selection), injected, others)| {
                AnnBp {
                    m2m,
                    role,
                    oidc,
                    session,
                    region,
                    vpc,
                    wait,
                    selection,
                    injected,
                    others,
                }
            },
        )
}

/// The pod's ServiceAccount: each setting the contract lets it carry, valid or not, sometimes
/// `m2m-token`, sometimes annotations read from pods only.
fn account_bp() -> impl Strategy<Value = AccountBp> {
    let role = role_bp(
        (40, 38, 17, 5),
        sa_ann((0, 97, 3), role_arn_valid(), role_arn_invalid()),
        sa_ann((0, 97, 3), role_name_valid(), role_name_invalid()),
        None,
    );
    let pod_only = prop_oneof![
        8 => Just(BTreeMap::new()),
        2 => btree_map(
            proptest::sample::select(&POD_ONLY[..]),
            prop_oneof![Just("app".to_owned()), Just("Not A Name".to_owned()), label()],
            1..3,
        ),
    ];
    let others = prop_oneof![
        4 => Just(BTreeMap::new()),
        1 => btree_map(
            prop_oneof![
                Just("idaas-projector.io/unknown-setting".to_owned()),
                Just(INJECTED.to_owned()),
                text(&[("example.com/", 0, 0), (LOWER, 1, 8)]),
            ],
            text(&[(PRINTABLE, 0, 12)]),
            1..3,
        ),
    ];
    (
        (
            prop_oneof![Just("default".to_owned()), label()],
            sa_ann((38, 60, 2), m2m_valid(), m2m_invalid()),
            role,
        ),
        (
            sa_ann((60, 38, 2), oidc_valid(), oidc_invalid()),
            sa_ann((65, 33, 2), region_valid(), region_invalid()),
            sa_ann((70, 28, 2), vpc_valid(), vpc_invalid()),
            sa_ann((65, 33, 2), wait_valid(), wait_invalid()),
        ),
        (pod_only, others),
    )
        .prop_map(
            |((name, m2m, role), (oidc, region, vpc, wait), (pod_only, others))| AccountBp {
                name,
                m2m,
                role,
                oidc,
                region,
                vpc,
                wait,
                pod_only,
                others,
            },
        )
}

/// The ServiceAccount lookup: mostly found, sometimes absent, rarely unavailable.
fn account_lookup() -> impl Strategy<Value = AccountBpLookup> {
    prop_oneof![
        80 => account_bp().prop_map(|sa| AccountBpLookup::Found(Box::new(sa))),
        17 => Just(AccountBpLookup::Absent),
        3 => strs(&[
            "the webhook has not loaded the cluster's ServiceAccounts yet, so ServiceAccount \"default\" \
             in namespace \"shop\" cannot be read; retry in a few seconds",
            "the webhook cannot read ServiceAccount \"default\" in namespace \"shop\" (timed out); \
             retry in a few seconds",
        ])
        .prop_map(AccountBpLookup::Unavailable),
    ]
}

/// The pod's `idaas-projector.io/injection` label (`disabled` opts it out) and the legacy one.
fn pod_labels_bp() -> impl Strategy<Value = PodLabelsBp> {
    let injection = prop_oneof![
        86 => Just(None),
        6 => Just(Some("disabled")),
        1 => Just(Some(" disabled ")),
        5 => Just(Some("enabled")),
        2 => Just(Some("")),
    ];
    let legacy = prop_oneof![9 => Just(false), 1 => Just(true)];
    (injection, legacy).prop_map(|(injection, legacy)| PodLabelsBp { injection, legacy })
}

/// Sometimes a node affinity: a required one (often admitting only Windows nodes, through
/// either OS label, sometimes also Linux ones or other terms) or a preferred one.
fn node_affinity() -> impl Strategy<Value = Option<Value>> {
    let os_label = proptest::sample::select(&OS_LABELS[..]);
    let expr = prop_oneof![
        6 => os_label.clone().prop_map(|k| json!({"key": k, "operator": "In", "values": ["windows"]})),
        1 => (os_label.clone(), prop_oneof![Just(json!(["linux"])), Just(json!(["windows", "linux"]))])
            .prop_map(|(k, v)| json!({"key": k, "operator": "In", "values": v})),
        1 => os_label.clone().prop_map(|k| json!({"key": k, "operator": "NotIn", "values": ["windows"]})),
        1 => os_label.prop_map(|k| json!({"key": k, "operator": "Exists"})),
        1 => Just(json!({"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]})),
    ];
    let term = vec(expr, 1..3).prop_map(|e| json!({"matchExpressions": e}));
    let required = vec(term.clone(), 1..3).prop_map(|terms| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
    });
    let preferred = term.prop_map(|t| {
        json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": t}]}})
    });
    prop_oneof![
        85 => Just(None),
        12 => required.prop_map(Some),
        3 => preferred.prop_map(Some),
    ]
}

fn value_from() -> impl Strategy<Value = Value> {
    prop_oneof![
        (label(), text(&[(LOWER, 1, 8)]))
            .prop_map(|(name, key)| json!({"secretKeyRef": {"name": name, "key": key}})),
        (label(), text(&[(LOWER, 1, 8)]), any::<bool>()).prop_map(|(name, key, optional)| {
            json!({"configMapKeyRef": {"name": name, "key": key, "optional": optional}})
        }),
        Just(json!({"fieldRef": {"fieldPath": "metadata.name"}})),
        Just(json!({"resourceFieldRef": {"resource": "limits.cpu"}})),
    ]
}

fn env_bp() -> impl Strategy<Value = EnvBp> {
    let name = prop_oneof![
        3 => (0..INJECTED_ENV.len()).prop_map(EnvName::Injected),
        5 => text(&[(UPPER, 1, 1), (UPPER_DIGITS_UNDERSCORE, 0, 10)]).prop_map(EnvName::Other),
    ];
    let source = prop_oneof![
        5 => text(&[(PRINTABLE, 0, 16)]).prop_map(EnvSource::Value),
        1 => Just(EnvSource::TokenFile),
        3 => value_from().prop_map(EnvSource::ValueFrom),
        1 => Just(EnvSource::Bare),
    ];
    let extra = extra_field();
    (name, source, extra).prop_map(|(name, source, extra)| EnvBp {
        name,
        source,
        extra,
    })
}

fn env_from() -> impl Strategy<Value = Value> {
    prop_oneof![
        label().prop_map(|n| json!({"configMapRef": {"name": n}})),
        (label(), text(&[(UPPER, 1, 4), ("_", 0, 0)]))
            .prop_map(|(n, p)| json!({"prefix": p, "secretRef": {"name": n, "optional": true}})),
    ]
}

fn mount_bp() -> impl Strategy<Value = MountBp> {
    let target = prop_oneof![
        9 => any::<Index>().prop_map(MountTarget::User),
        1 => Just(MountTarget::Ours),
    ];
    let path = prop_oneof![
        40 => text(&[("/", 0, 0), (LOWER, 1, 6), ("/", 0, 0), (LOWER, 0, 6)])
            .prop_map(MountPathBp::Random),
        1 => Just(MountPathBp::Ours),
        1 => Just(MountPathBp::OursTrailingSlash),
        1 => Just(MountPathBp::Parent),
        1 => Just(MountPathBp::Child),
    ];
    (target, path, proptest::option::of(any::<bool>())).prop_map(|(target, path, read_only)| {
        MountBp {
            target,
            path,
            read_only,
        }
    })
}

fn list_shape<T: fmt::Debug + Clone + 'static>(
    item: impl Strategy<Value = T> + 'static,
    len: std::ops::Range<usize>,
    weights: (u32, u32, u32),
) -> BoxedStrategy<ListShape<T>> {
    let (absent, null, items) = weights;
    prop_oneof![
        absent => Just(ListShape::Absent),
        null => Just(ListShape::Null),
        items => vec(item, len).prop_map(ListShape::Items),
    ]
    .boxed()
}

fn security_context() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(0i64..70000),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(uid, non_root, ro, drop)| {
            let mut sc = Map::new();
            if let Some(uid) = uid {
                sc.insert("runAsUser".into(), json!(uid));
            }
            if let Some(b) = non_root {
                sc.insert("runAsNonRoot".into(), json!(b));
            }
            if let Some(b) = ro {
                sc.insert("readOnlyRootFilesystem".into(), json!(b));
            }
            if drop {
                sc.insert("capabilities".into(), json!({"drop": ["ALL"]}));
            }
            Value::Object(sc)
        })
}

/// A container; `wait_weight` out of 60 are named like the injected init container.
fn container_bp(wait_weight: u32) -> impl Strategy<Value = ContainerBp> {
    let name = prop_oneof![
        58 - wait_weight => prop_oneof![Just("app".to_owned()), Just("proxy".to_owned()), label()]
            .prop_map(NameBp::Random),
        wait_weight => Just(NameBp::Wait),
        2 => Just(NameBp::VolumeName),
    ];
    (
        (
            name,
            text(&[
                ("registry.example.com/", 0, 0),
                (LOWER, 1, 8),
                (":", 0, 0),
                (DIGITS, 1, 1),
            ]),
        ),
        list_shape(env_bp(), 0..6, (30, 3, 67)),
        proptest::option::of(vec(env_from(), 0..3)),
        list_shape(mount_bp(), 0..4, (40, 3, 57)),
        proptest::option::of(security_context()),
        proptest::option::of(prop_oneof![
            Just(json!(["sh", "-c", "sleep 3600"])),
            Just(json!(["/app"]))
        ]),
        prop_oneof![3 => Just(false), 2 => Just(true)],
        unknown_fields(),
    )
        .prop_map(
            |((name, image), env, env_from, mounts, security, command, sidecar, extras)| {
                ContainerBp {
                    name,
                    image,
                    env,
                    env_from,
                    mounts,
                    security,
                    command,
                    sidecar,
                    extras,
                }
            },
        )
}

fn volume_bp() -> impl Strategy<Value = VolumeBp> {
    let source = prop_oneof![
        Just(("emptyDir".to_owned(), json!({}))),
        Just(("emptyDir".to_owned(), json!({"medium": "Memory"}))),
        label().prop_map(|n| ("configMap".to_owned(), json!({"name": n}))),
        label().prop_map(|n| (
            "secret".to_owned(),
            json!({"secretName": n, "defaultMode": 420})
        )),
        Just((
            "projected".to_owned(),
            json!({"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]})
        )),
    ];
    (
        prop_oneof![24 => Just(false), 1 => Just(true)],
        prop_oneof![label(), Just("data".to_owned())],
        source,
        extra_field(),
    )
        .prop_map(|(ours_name, name, source, extra)| VolumeBp {
            ours_name,
            name,
            source,
            extra,
        })
}

fn lookup() -> impl Strategy<Value = TokenLookup> {
    let defaults = (
        prop_oneof![
            Just(None),
            text(&[(LOWER, 1, 8), ("-secret", 0, 0)]).prop_map(Some)
        ],
        prop_oneof![
            1 => Just(None),
            3 => text(&[("acs:ram::", 0, 0), (DIGITS, 1, 16), (":role/", 0, 0), (LOWER, 1, 10)])
                .prop_map(Some),
        ],
        proptest::option::of(text(&[
            ("acs:ram::", 0, 0),
            (DIGITS, 1, 16),
            (":oidc-provider/", 0, 0),
            (LOWER, 1, 10),
        ])),
    );
    // An empty secret name stands for "the M2MToken's own name"; `build` fills it in.
    let found = defaults.prop_map(|(secret, role_arn, oidc_provider_arn)| {
        TokenLookup::Found(TokenDefaults {
            secret_name: secret.unwrap_or_default(),
            role_arn,
            oidc_provider_arn,
        })
    });
    prop_oneof![
        30 => Just(TokenLookup::Standalone),
        15 => Just(TokenLookup::NotFound),
        50 => found,
        2 => Just(TokenLookup::Unavailable),
    ]
}

fn config() -> impl Strategy<Value = MutateConfig> {
    (
        prop_oneof![
            1 => Just(None),
            4 => Just(Some("acs:ram::1234567890123456:oidc-provider/idaas".to_owned())),
        ],
        prop_oneof![3 => Just(None), 1 => Just(Some("cn-shanghai".to_owned()))],
        prop_oneof![Just(300u64), Just(120)],
    )
        .prop_map(|(oidc, region, wait)| MutateConfig {
            init_image: INIT_IMAGE.to_owned(),
            default_oidc_provider_arn: oidc,
            default_sts_region: region,
            default_token_wait: Duration::from_secs(wait),
        })
}

/// The pod's name, its namespaces (in the metadata and in the request) and its labels.
#[allow(clippy::type_complexity)]
fn pod_identity() -> impl Strategy<
    Value = (
        PodName,
        (Option<String>, Option<String>),
        Option<BTreeMap<String, String>>,
        PodLabelsBp,
    ),
> {
    let name = prop_oneof![
        6 => label().prop_map(PodName::Name),
        3 => label().prop_map(|n| PodName::GenerateName(format!("{n}-"))),
        1 => Just(PodName::None),
    ];
    let namespaces = (
        proptest::option::of(prop_oneof![Just("shop".to_owned()), label()]),
        prop_oneof![
            9 => Just(Some("shop".to_owned())),
            1 => Just(None),
            1 => re("[a-z]{40,63}").prop_map(Some),
        ],
    );
    let labels = proptest::option::of(btree_map(
        prop_oneof![
            Just("app".to_owned()),
            Just("idaas-projector.io/m2m-token".to_owned()),
            text(&[(LOWER, 1, 6)])
        ],
        label(),
        0..3,
    ));
    (name, namespaces, labels, pod_labels_bp())
}

/// What makes a pod a Windows pod, or not: the nodeSelector (either OS label, or others),
/// `spec.os.name`, a node affinity.
fn windows_bp() -> impl Strategy<
    Value = (
        Option<BTreeMap<String, String>>,
        Option<&'static str>,
        Option<Value>,
    ),
> {
    let node_selector = proptest::option::of(btree_map(
        prop_oneof![
            3 => Just("kubernetes.io/os".to_owned()),
            2 => Just("beta.kubernetes.io/os".to_owned()),
            1 => Just("kubernetes.io/arch".to_owned()),
            1 => text(&[(LOWER, 1, 6)]),
        ],
        prop_oneof![
            Just("windows".to_owned()),
            Just("linux".to_owned()),
            label()
        ],
        0..3,
    ));
    let os = prop_oneof![
        8 => Just(None),
        1 => Just(Some("windows")),
        1 => Just(Some("linux")),
    ];
    (node_selector, os, node_affinity())
}

fn pod_bp() -> impl Strategy<Value = PodBp> {
    (
        (
            pod_identity(),
            ann_bp(),
            prop_oneof![
                4 => Just(LeftToAccount::Nothing),
                3 => Just(LeftToAccount::OptIn),
                3 => Just(LeftToAccount::OptInAndSettings),
            ],
        ),
        (
            vec(container_bp(1), 1..5),
            list_shape(container_bp(3), 0..4, (45, 3, 52)),
            list_shape(volume_bp(), 0..5, (30, 3, 67)),
        ),
        (proptest::option::of(security_context()), windows_bp()),
        (unknown_fields(), unknown_fields(), unknown_fields()),
        (lookup(), config()),
        (
            any::<bool>(),
            account_lookup(),
            prop_oneof![3 => Just(true), 1 => Just(false)],
        ),
    )
        .prop_map(
            |(
                ((name, (meta_namespace, request_namespace), labels, our_labels), ann, left),
                (containers, init, volumes),
                (pod_security, (node_selector, os, affinity)),
                (extras_pod, extras_meta, extras_spec),
                (lookup, config),
                (namespace_enabled, account, names_account),
            )| PodBp {
                name,
                meta_namespace,
                request_namespace,
                labels,
                our_labels,
                ann,
                left_to_account: left,
                containers,
                init,
                volumes,
                pod_security,
                node_selector,
                os,
                affinity,
                extras_pod,
                extras_meta,
                extras_spec,
                lookup,
                config,
                namespace_enabled,
                account,
                names_account,
            },
        )
}

fn arb_case() -> impl Strategy<Value = Case> {
    pod_bp().prop_map(build)
}

// ---------------------------------------------------------------------------------------------
// From a blueprint to a pod.

fn insert_extras(obj: &mut Map<String, Value>, extras: &[(String, Value)]) {
    for (k, v) in extras {
        obj.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

fn unique(used: &mut HashSet<String>, base: String, i: usize) -> String {
    let mut name = base;
    if used.contains(&name) {
        name = format!("{name}-{i}");
    }
    used.insert(name.clone());
    name
}

fn container_name(bp: &NameBp) -> String {
    match bp {
        NameBp::Random(n) => n.clone(),
        NameBp::Wait => WAIT_CONTAINER.to_owned(),
        NameBp::VolumeName => VOLUME.to_owned(),
    }
}

fn list_json<T>(shape: &ListShape<T>, mut f: impl FnMut(&[T]) -> Vec<Value>) -> Option<Value> {
    match shape {
        ListShape::Absent => None,
        ListShape::Null => Some(Value::Null),
        ListShape::Items(items) => Some(Value::Array(f(items))),
    }
}

fn container_json(bp: &ContainerBp, name: &str, volumes: &[String], init: bool) -> Value {
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert("image".into(), json!(bp.image));
    if let Some(cmd) = &bp.command {
        c.insert("command".into(), cmd.clone());
    }
    if init && bp.sidecar {
        c.insert("restartPolicy".into(), json!("Always"));
    }
    let env = list_json(&bp.env, |items| {
        let mut seen = HashSet::new();
        items
            .iter()
            .filter_map(|e| {
                let name = match &e.name {
                    EnvName::Injected(i) => INJECTED_ENV[*i].to_owned(),
                    EnvName::Other(n) => n.clone(),
                };
                if !seen.insert(name.clone()) {
                    return None;
                }
                let mut v = Map::new();
                v.insert("name".into(), json!(name));
                match &e.source {
                    EnvSource::Value(s) => {
                        v.insert("value".into(), json!(s));
                    }
                    EnvSource::TokenFile => {
                        v.insert("value".into(), json!(TOKEN_FILE));
                    }
                    EnvSource::ValueFrom(from) => {
                        v.insert("valueFrom".into(), from.clone());
                    }
                    EnvSource::Bare => {}
                }
                if let Some((k, x)) = &e.extra {
                    v.insert(k.clone(), x.clone());
                }
                Some(Value::Object(v))
            })
            .collect()
    });
    if let Some(env) = env {
        c.insert("env".into(), env);
    }
    if let Some(from) = &bp.env_from {
        c.insert("envFrom".into(), Value::Array(from.clone()));
    }
    let mounts = list_json(&bp.mounts, |items| {
        let mut paths = HashSet::new();
        items
            .iter()
            .filter_map(|m| {
                let volume = match &m.target {
                    MountTarget::User(i) if volumes.is_empty() => {
                        let _ = i;
                        return None;
                    }
                    MountTarget::User(i) => volumes[i.index(volumes.len())].clone(),
                    MountTarget::Ours => VOLUME.to_owned(),
                };
                let path = match &m.path {
                    MountPathBp::Random(p) => p.clone(),
                    MountPathBp::Ours => MOUNT_PATH.to_owned(),
                    MountPathBp::OursTrailingSlash => format!("{MOUNT_PATH}/"),
                    MountPathBp::Parent => "/var/run/secrets".to_owned(),
                    MountPathBp::Child => format!("{MOUNT_PATH}/extra"),
                };
                // Kubernetes wants unique mount paths (and this generator one mount per path
                // family at the webhook's path, so that "/x" and "/x/" never both appear).
                let key = path.trim_end_matches('/').to_owned();
                if !paths.insert(key) {
                    return None;
                }
                let mut v = Map::new();
                v.insert("name".into(), json!(volume));
                v.insert("mountPath".into(), json!(path));
                if let Some(ro) = m.read_only {
                    v.insert("readOnly".into(), json!(ro));
                }
                Some(Value::Object(v))
            })
            .collect()
    });
    if let Some(mounts) = mounts {
        c.insert("volumeMounts".into(), mounts);
    }
    if let Some(sc) = &bp.security {
        c.insert("securityContext".into(), sc.clone());
    }
    insert_extras(&mut c, &bp.extras);
    Value::Object(c)
}

fn render_list(
    list: &ListBp,
    names: &[String],
    annotation: &'static str,
    only: bool,
    invalid: &mut Vec<&'static str>,
) -> (String, Vec<String>) {
    let pick = |idx: &[Index]| -> Vec<String> {
        idx.iter()
            .map(|i| names[i.index(names.len())].clone())
            .collect()
    };
    match list {
        ListBp::Existing(idx, spaced) => {
            let picked = pick(idx);
            let text = if *spaced {
                // Spaces, an empty item and a duplicate: all allowed.
                format!(" {} ,, {}", picked.join(" , "), picked[0])
            } else {
                picked.join(",")
            };
            (text, picked)
        }
        ListBp::WithUnknown(idx) => {
            let mut picked = pick(idx);
            picked.push(NO_SUCH_CONTAINER.to_owned());
            (picked.join(","), picked)
        }
        ListBp::InvalidName => {
            invalid.push(annotation);
            ("Bad_Name".to_owned(), vec![])
        }
        ListBp::Blank(text) => {
            if only {
                invalid.push(annotation);
            }
            (text.clone(), vec![])
        }
    }
}

/// Container names, unique across containers and init containers as Kubernetes requires:
/// the regular ones, then the init ones.
fn container_names(bp: &PodBp) -> (Vec<String>, Vec<String>) {
    let mut used = HashSet::new();
    let regular_names: Vec<String> = bp
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| unique(&mut used, container_name(&c.name), i))
        .collect();
    let init_names: Vec<String> = match &bp.init {
        ListShape::Items(items) => items
            .iter()
            .enumerate()
            .map(|(i, c)| unique(&mut used, container_name(&c.name), 10 + i))
            .collect(),
        _ => vec![],
    };
    (regular_names, init_names)
}

/// `spec.volumes` (unique names), and the names of the user's own volumes, for mounts.
fn volumes_json(volumes: &ListShape<VolumeBp>) -> (Option<Value>, Vec<String>) {
    let mut used_volumes = HashSet::new();
    let json = list_json(volumes, |items| {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let base = if v.ours_name {
                    VOLUME.to_owned()
                } else {
                    v.name.clone()
                };
                let name = unique(&mut used_volumes, base, i);
                let mut o = Map::new();
                o.insert("name".into(), json!(name));
                o.insert(v.source.0.clone(), v.source.1.clone());
                if let Some((k, x)) = &v.extra {
                    o.insert(k.clone(), x.clone());
                }
                Value::Object(o)
            })
            .collect()
    });
    // Mounts refer to the user's own volumes (or to the webhook's volume name).
    let mut user_volume_names: Vec<String> = used_volumes.into_iter().collect();
    user_volume_names.sort();
    user_volume_names.retain(|n| n != VOLUME);
    (json, user_volume_names)
}

/// The pod's annotations, the ones whose values the contract rejects, and the selection.
fn pod_annotations(
    ann: &AnnBp,
    all_names: &[String],
) -> (Map<String, Value>, Vec<&'static str>, Sel) {
    let mut invalid = Vec::new();
    let mut annotations = Map::new();
    for (key, value) in [
        (M2M_TOKEN, &ann.m2m),
        (ROLE_ARN, &ann.role.arn),
        (ROLE_NAME, &ann.role.name),
        (OIDC_PROVIDER_ARN, &ann.oidc),
        (ROLE_SESSION_NAME, &ann.session),
        (STS_REGION, &ann.region),
        (STS_VPC_ENDPOINT, &ann.vpc),
        (TOKEN_WAIT, &ann.wait),
    ] {
        if let Some((v, ok)) = value {
            annotations.insert(key.to_owned(), v.clone());
            if !ok {
                invalid.push(key);
            }
        }
    }
    both_roles_invalid(
        ann.role.arn.is_some() && ann.role.name.is_some(),
        &mut invalid,
    );
    let mut sel_annotation = |list: &ListBp, key: &'static str, only: bool| {
        let (text, names) = render_list(list, all_names, key, only, &mut invalid);
        annotations.insert(key.to_owned(), json!(text));
        names
    };
    let selection = match &ann.selection {
        SelBp::All => Sel::All,
        SelBp::Skip(l) => Sel::Skip(sel_annotation(l, SKIP_CONTAINERS, false)),
        SelBp::Only(l) => Sel::Only(sel_annotation(l, ONLY_CONTAINERS, true)),
        SelBp::Both(s, o) => {
            sel_annotation(s, SKIP_CONTAINERS, false);
            let names = sel_annotation(o, ONLY_CONTAINERS, true);
            invalid.push(SKIP_CONTAINERS);
            Sel::Only(names)
        }
    };
    if let Some(h) = &ann.injected {
        annotations.insert(INJECTED.to_owned(), json!(h));
    }
    for (k, v) in &ann.others {
        annotations.entry(k.clone()).or_insert_with(|| json!(v));
    }
    (annotations, invalid, selection)
}

/// `role-arn` and `role-name` on one level: both are at fault, whatever their values.
fn both_roles_invalid(both: bool, invalid: &mut Vec<&'static str>) {
    if both {
        for key in [ROLE_ARN, ROLE_NAME] {
            if !invalid.contains(&key) {
                invalid.push(key);
            }
        }
    }
}

/// The ServiceAccount lookup, and the ServiceAccount's annotations the contract rejects. The
/// ServiceAccount is the pod's: the one it names, else `default`.
fn account_of(bp: &AccountBpLookup, names_account: bool) -> (AccountLookup, Vec<&'static str>) {
    let sa = match bp {
        AccountBpLookup::Found(sa) => sa,
        AccountBpLookup::Absent => return (AccountLookup::Absent, vec![]),
        AccountBpLookup::Unavailable(why) => {
            return (AccountLookup::Unavailable(why.clone()), vec![]);
        }
    };
    let mut annotations: BTreeMap<String, String> = sa.others.clone();
    let mut invalid = Vec::new();
    for (key, value) in [
        (M2M_TOKEN, &sa.m2m),
        (ROLE_ARN, &sa.role.arn),
        (ROLE_NAME, &sa.role.name),
        (OIDC_PROVIDER_ARN, &sa.oidc),
        (STS_REGION, &sa.region),
        (STS_VPC_ENDPOINT, &sa.vpc),
        (TOKEN_WAIT, &sa.wait),
    ] {
        if let Some((v, ok)) = value {
            annotations.insert(key.to_owned(), v.clone());
            if !ok {
                invalid.push(key);
            }
        }
    }
    both_roles_invalid(
        sa.role.arn.is_some() && sa.role.name.is_some(),
        &mut invalid,
    );
    for (key, value) in &sa.pod_only {
        annotations.insert((*key).to_owned(), value.clone());
    }
    let found = AccountAnnotations {
        name: if names_account {
            sa.name.clone()
        } else {
            "default".to_owned()
        },
        annotations,
    };
    (AccountLookup::Found(found), invalid)
}

/// `metadata`: names, namespace, labels (the webhook's own among them) and annotations.
fn metadata_json(bp: &PodBp, annotations: Map<String, Value>) -> Value {
    let mut metadata = Map::new();
    match &bp.name {
        PodName::Name(n) => {
            metadata.insert("name".into(), json!(n));
        }
        PodName::GenerateName(n) => {
            metadata.insert("generateName".into(), json!(n));
        }
        PodName::None => {}
    }
    if let Some(ns) = &bp.meta_namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    let mut labels = bp.labels.clone();
    if let Some(value) = bp.our_labels.injection {
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(INJECTION_LABEL.to_owned(), value.to_owned());
    }
    if bp.our_labels.legacy {
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LEGACY_INJECT_LABEL.to_owned(), "true".to_owned());
    }
    if let Some(labels) = &labels {
        metadata.insert("labels".into(), json!(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    insert_extras(&mut metadata, &bp.extras_meta);
    Value::Object(metadata)
}

/// `spec`, around the containers, init containers and volumes already rendered.
fn spec_json(
    bp: &PodBp,
    containers: Vec<Value>,
    init: Option<Value>,
    volumes: Option<Value>,
) -> Value {
    let mut spec = Map::new();
    spec.insert("containers".into(), Value::Array(containers));
    if let Some(init) = init {
        spec.insert("initContainers".into(), init);
    }
    if let Some(volumes) = volumes {
        spec.insert("volumes".into(), volumes);
    }
    if let Some(sc) = &bp.pod_security {
        spec.insert("securityContext".into(), sc.clone());
    }
    if let Some(sel) = &bp.node_selector {
        spec.insert("nodeSelector".into(), json!(sel));
    }
    if let Some(os) = bp.os {
        spec.insert("os".into(), json!({"name": os}));
    }
    if let Some(affinity) = &bp.affinity {
        spec.insert("affinity".into(), affinity.clone());
    }
    if let (true, AccountBpLookup::Found(sa)) = (bp.names_account, &bp.account) {
        spec.insert("serviceAccountName".into(), json!(sa.name));
    }
    spec.insert("restartPolicy".into(), json!("Always"));
    insert_extras(&mut spec, &bp.extras_spec);
    Value::Object(spec)
}

/// The M2MToken the pod would name: its own, else its ServiceAccount's (in a labelled
/// namespace), else a stand-in.
fn token_named(bp: &PodBp) -> String {
    let pod = bp.ann.m2m.as_ref().and_then(|(v, _)| v.as_str());
    let account = match (&bp.account, bp.namespace_enabled) {
        (AccountBpLookup::Found(sa), true) => sa.m2m.as_ref().map(|(v, _)| v.as_str()),
        _ => None,
    };
    pod.or(account)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "payments".to_owned())
}

/// Takes off the pod what it leaves to its ServiceAccount.
fn leave_to_account(ann: &mut AnnBp, left: LeftToAccount) {
    if let LeftToAccount::OptIn | LeftToAccount::OptInAndSettings = left {
        ann.m2m = None;
    }
    if let LeftToAccount::OptInAndSettings = left {
        ann.role = RoleBp {
            arn: None,
            name: None,
        };
        ann.oidc = None;
        ann.region = None;
        ann.vpc = None;
        ann.wait = None;
    }
}

fn build(mut bp: PodBp) -> Case {
    if bp.namespace_enabled {
        leave_to_account(&mut bp.ann, bp.left_to_account);
    }
    let (regular_names, init_names) = container_names(&bp);
    let (volumes, user_volume_names) = volumes_json(&bp.volumes);
    let containers: Vec<Value> = bp
        .containers
        .iter()
        .zip(&regular_names)
        .map(|(c, n)| container_json(c, n, &user_volume_names, false))
        .collect();
    let init = list_json(&bp.init, |items| {
        items
            .iter()
            .zip(&init_names)
            .map(|(c, n)| container_json(c, n, &user_volume_names, true))
            .collect()
    });
    let all_names: Vec<String> = regular_names.iter().chain(&init_names).cloned().collect();
    let (annotations, invalid, selection) = pod_annotations(&bp.ann, &all_names);

    let mut pod = Map::new();
    pod.insert("apiVersion".into(), json!("v1"));
    pod.insert("kind".into(), json!("Pod"));
    pod.insert("metadata".into(), metadata_json(&bp, annotations));
    pod.insert("spec".into(), spec_json(&bp, containers, init, volumes));
    insert_extras(&mut pod, &bp.extras_pod);

    // A found M2MToken without a secretName writes the Secret named after itself.
    let mut lookup = bp.lookup.clone();
    if let TokenLookup::Found(d) = &mut lookup
        && d.secret_name.is_empty()
    {
        d.secret_name = token_named(&bp);
    }
    let (account, invalid_account_annotations) = account_of(&bp.account, bp.names_account);
    Case {
        pod: Value::Object(pod),
        namespace: bp.request_namespace,
        lookup,
        config: bp.config,
        namespace_enabled: bp.namespace_enabled,
        account,
        invalid_annotations: invalid,
        invalid_account_annotations,
        selection,
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: what the contract says should happen to a case.

/// What the webhook must inject, once every default is resolved.
#[derive(Debug, Clone)]
struct Expected {
    secret_name: String,
    role_arn: String,
    oidc_provider_arn: String,
    /// `Some` when the annotation sets it or it can be derived without cleaning.
    session_name: Option<String>,
    sts_region: Option<String>,
    vpc: bool,
    /// The init container's timeout, if one is inserted by this patch.
    init_wait: Option<Duration>,
    add_volume: bool,
    /// Warnings the answer carries word for word: the ServiceAccount's pod-only annotations.
    warnings: Vec<String>,
    /// The pod has the legacy routing label: the answer warns that it is deprecated.
    legacy_warning: bool,
    /// The `injection` label is neither `enabled` nor `disabled`.
    odd_label_warning: bool,
    /// The pod names another M2MToken than its ServiceAccount, and takes the role from it.
    other_token_warning: bool,
    provenance: Provenance,
}

/// Where the resolved values came from (what the generator's coverage counts).
#[derive(Debug, Clone, Default)]
struct Provenance {
    opted_in_by_account: bool,
    /// Settings the pod leaves to its ServiceAccount, which sets them ("role" for either role key).
    from_account: Vec<&'static str>,
    /// Settings both set: the pod's win.
    pod_over_account: Vec<&'static str>,
    /// The winning level names the role by `role-name`.
    role_by_name: bool,
}

/// Something a denial's message must name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// A pod annotation, which the message names, and not as a ServiceAccount's.
    Pod(&'static str),
    /// The annotation of this ServiceAccount: the message names both.
    Account(&'static str, String),
    /// Any other name or word the message contains (a container, a volume, a path, a kind).
    Names(&'static str),
}

impl Cause {
    fn explains(&self, message: &str) -> bool {
        match self {
            Cause::Pod(key) => message.contains(key) && !message.contains(" on ServiceAccount \""),
            Cause::Account(key, name) => {
                message.contains(key) && message.contains(&format!(" on ServiceAccount {name:?}"))
            }
            Cause::Names(what) => message.contains(what),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Pod(key) => write!(f, "{key}"),
            Cause::Account(key, _) => write!(f, "{key} on a ServiceAccount"),
            Cause::Names(what) => write!(f, "{what}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Skip,
    /// Denied; the message must name one of these causes.
    Deny(Vec<Cause>),
    Inject(Box<Expected>),
}

fn annotations_of(pod: &Value) -> Option<&Map<String, Value>> {
    pod.get("metadata")?.get("annotations")?.as_object()
}

fn ann_str<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    annotations_of(pod)?
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
}

fn items<'a>(obj: &'a Value, key: &str) -> &'a [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The same mount path; Windows paths as the kubelet maps them (either slash, any case, with or
/// without the `C:` drive).
fn same_path(a: &str, b: &str) -> bool {
    if !b.starts_with("C:") {
        return a.trim_end_matches('/') == b.trim_end_matches('/');
    }
    let normal = |p: &str| {
        let p = p.replace('/', "\\").to_lowercase();
        let p = p.strip_prefix("c:").unwrap_or(&p).to_owned();
        p.trim_end_matches('\\').to_owned()
    };
    normal(a) == normal(b)
}

fn is_windows(spec: &Value) -> bool {
    let selector = |label: &str| spec.get("nodeSelector").and_then(|s| s.get(label));
    if spec
        .pointer("/os/name")
        .is_some_and(|os| os != &json!("windows"))
    {
        return false; // an explicit spec.os.name decides
    }
    spec.pointer("/os/name") == Some(&json!("windows"))
        || OS_LABELS
            .iter()
            .any(|label| selector(label) == Some(&json!("windows")))
        || affinity_requires_windows(spec)
}

/// A required node affinity every term of which (they are ORed) has an `In` expression on an
/// OS label whose values are all `windows`.
fn affinity_requires_windows(spec: &Value) -> bool {
    let required =
        &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let terms = items(required, "nodeSelectorTerms");
    let windows_only = |e: &Value| {
        let values = items(e, "values");
        OS_LABELS.contains(&e["key"].as_str().unwrap_or(""))
            && e["operator"] == "In"
            && !values.is_empty()
            && values.iter().all(|v| v == "windows")
    };
    !terms.is_empty()
        && terms
            .iter()
            .all(|t| items(t, "matchExpressions").iter().any(windows_only))
}

/// Where the token is mounted, and the token file: the Windows forms in a Windows pod.
fn paths_for(spec: &Value) -> (&'static str, &'static str) {
    if is_windows(spec) {
        (WINDOWS_MOUNT_PATH, WINDOWS_TOKEN_FILE)
    } else {
        (MOUNT_PATH, TOKEN_FILE)
    }
}

/// The user's containers: regular ones, then init containers other than the webhook's own.
fn user_containers(pod: &Value) -> Vec<(&'static str, usize, &Value)> {
    let spec = &pod["spec"];
    let regular = items(spec, "containers")
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, c));
    let init = items(spec, "initContainers")
        .iter()
        .enumerate()
        .filter(|(_, c)| name_of(c) != WAIT_CONTAINER)
        .map(|(i, c)| ("initContainers", i, c));
    regular.chain(init).collect()
}

/// A pod labelled `idaas-projector.io/injection: disabled` (trimmed) is never injected.
fn opted_out(pod: &Value) -> bool {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(INJECTION_LABEL))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim() == "disabled")
}

/// Which level a setting was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Pod,
    Account,
}

/// The role a level names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Arn(String),
    Name(String),
}

/// Where settings are read: the pod's annotations, then (in a labelled namespace) its
/// ServiceAccount's.
struct Levels<'a> {
    pod: &'a Value,
    account: Option<&'a AccountAnnotations>,
}

impl<'a> Levels<'a> {
    fn get(&self, level: Level, key: &str) -> Option<&'a str> {
        match level {
            Level::Pod => ann_str(self.pod, key),
            Level::Account => self.account?.annotations.get(key).map(|v| v.trim()),
        }
    }

    /// The first level's value of `key`.
    fn value(&self, key: &str) -> Option<String> {
        [Level::Pod, Level::Account]
            .iter()
            .find_map(|l| self.get(*l, key))
            .map(str::to_owned)
    }

    /// The role of the first level that sets `role-arn` or `role-name`.
    fn role(&self) -> Option<Role> {
        [Level::Pod, Level::Account].iter().find_map(|l| {
            match (self.get(*l, ROLE_ARN), self.get(*l, ROLE_NAME)) {
                (Some(arn), _) => Some(Role::Arn(arn.to_owned())),
                (None, Some(name)) => Some(Role::Name(name.to_owned())),
                (None, None) => None,
            }
        })
    }

    /// Which settings come from the ServiceAccount, and which the pod's override.
    fn provenance(&self, opted_in_by_account: bool) -> Provenance {
        let mut p = Provenance {
            opted_in_by_account,
            role_by_name: matches!(self.role(), Some(Role::Name(_))),
            ..Provenance::default()
        };
        let settings: [(&'static str, &[&str]); 5] = [
            ("role", &[ROLE_ARN, ROLE_NAME]),
            (OIDC_PROVIDER_ARN, &[OIDC_PROVIDER_ARN]),
            (STS_REGION, &[STS_REGION]),
            (STS_VPC_ENDPOINT, &[STS_VPC_ENDPOINT]),
            (TOKEN_WAIT, &[TOKEN_WAIT]),
        ];
        for (what, keys) in settings {
            let sets = |l: Level| keys.iter().any(|k| self.get(l, k).is_some());
            match (sets(Level::Pod), sets(Level::Account)) {
                (true, true) => p.pod_over_account.push(what),
                (false, true) => p.from_account.push(what),
                _ => {}
            }
        }
        p
    }
}

/// The ServiceAccount whose annotations count: in a labelled namespace, when found. An
/// unavailable one denies the pod.
fn account_in_scope(case: &Case) -> Result<Option<&AccountAnnotations>, Outcome> {
    if !case.namespace_enabled {
        return Ok(None);
    }
    match &case.account {
        AccountLookup::Found(sa) => Ok(Some(sa)),
        AccountLookup::Absent => Ok(None),
        AccountLookup::Unavailable(_) => {
            let mut causes = vec![Cause::Names("ServiceAccount")];
            if case.invalid_annotations.contains(&M2M_TOKEN) {
                causes.push(Cause::Pod(M2M_TOKEN));
            }
            Err(Outcome::Deny(causes))
        }
    }
}

/// The annotations with values the contract rejects, on the pod and on its ServiceAccount (whose
/// `m2m-token` does not count when the pod has its own).
fn invalid_causes(
    case: &Case,
    account: Option<&AccountAnnotations>,
    by_account: bool,
) -> Vec<Cause> {
    let mut causes: Vec<Cause> = case
        .invalid_annotations
        .iter()
        .map(|key| Cause::Pod(key))
        .collect();
    if let Some(sa) = account {
        for key in &case.invalid_account_annotations {
            if *key != M2M_TOKEN || by_account {
                causes.push(Cause::Account(key, sa.name.clone()));
            }
        }
    }
    causes
}

/// The account ID of `acs:ram::<account>:oidc-provider/<name>`.
fn oidc_account(arn: &str) -> &str {
    arn.strip_prefix("acs:ram::")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_default()
}

/// The role ARN, the OIDC provider ARN and the token wait, each from the pod, then the
/// ServiceAccount, then the M2MToken, then the server; what is missing goes to `reasons`.
fn resolve(
    levels: &Levels<'_>,
    defaults: &TokenDefaults,
    config: &MutateConfig,
    reasons: &mut Vec<Cause>,
) -> (Option<String>, Option<String>, Option<Duration>) {
    let oidc = levels
        .value(OIDC_PROVIDER_ARN)
        .or(defaults.oidc_provider_arn.clone())
        .or(config.default_oidc_provider_arn.clone());
    if oidc.is_none() {
        reasons.push(Cause::Pod(OIDC_PROVIDER_ARN));
    }
    let role = levels.role();
    let role_arn = match &role {
        Some(Role::Arn(arn)) => Some(arn.clone()),
        Some(Role::Name(name)) => oidc
            .as_deref()
            .map(|o| format!("acs:ram::{}:role/{name}", oidc_account(o))),
        None => defaults.role_arn.clone(),
    };
    if role.is_none() && role_arn.is_none() {
        reasons.push(Cause::Pod(ROLE_ARN));
    }
    let wait = match levels.value(TOKEN_WAIT).as_deref() {
        None => Some(config.default_token_wait),
        Some(v) if v.eq_ignore_ascii_case("false") => None,
        Some(v) if v.eq_ignore_ascii_case("true") => Some(config.default_token_wait),
        Some(v) => Some(humantime::parse_duration(v).expect("a valid token-wait")),
    };
    (role_arn, oidc, wait)
}

/// What in the pod keeps the webhook from injecting: skip/only names it does not have, a wait
/// container, volume or mount that is not the webhook's, a regular container named like the
/// wait container when one is injected.
fn conflicts(case: &Case, wait_requested: bool) -> Vec<Cause> {
    let pod = &case.pod;
    let spec = &pod["spec"];
    let mut reasons = Vec::new();
    let user = user_containers(pod);
    let user_names: Vec<&str> = user.iter().map(|(_, _, c)| name_of(c)).collect();
    if case
        .selection
        .names()
        .iter()
        .any(|n| !user_names.contains(&n.as_str()))
    {
        reasons.push(Cause::Pod(match case.selection {
            Sel::Skip(_) => SKIP_CONTAINERS,
            _ => ONLY_CONTAINERS,
        }));
    }
    let already = annotations_of(pod).is_some_and(|a| a.contains_key(INJECTED));
    let has_wait = items(spec, "initContainers")
        .iter()
        .any(|c| name_of(c) == WAIT_CONTAINER);
    if has_wait && !already {
        reasons.push(Cause::Names(WAIT_CONTAINER));
    }
    let our_volume = items(spec, "volumes").iter().find(|v| name_of(v) == VOLUME);
    if let Some(v) = our_volume
        && !(already && v.get("projected").is_some())
    {
        reasons.push(Cause::Names(VOLUME));
    }
    let mount_path = paths_for(spec).0;
    for (_, _, c) in user
        .iter()
        .filter(|(_, _, c)| case.selection.selects(name_of(c)))
    {
        for m in items(c, "volumeMounts") {
            let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
            if same_path(path, mount_path) && name_of(m) != VOLUME {
                reasons.push(Cause::Names(mount_path));
            }
        }
    }
    let any_selected = user
        .iter()
        .any(|(_, _, c)| case.selection.selects(name_of(c)));
    // A regular container with the wait container's name: the injected one would duplicate it.
    if wait_requested
        && any_selected
        && !is_windows(spec)
        && items(spec, "containers")
            .iter()
            .any(|c| name_of(c) == WAIT_CONTAINER)
    {
        reasons.push(Cause::Names(WAIT_CONTAINER));
    }
    reasons
}

/// The role session name: the annotation, else `<namespace>.<name>` when both are known (the
/// generator's names are already in RAM's alphabet), cut to 64.
fn session_name(case: &Case) -> Option<String> {
    let pod = &case.pod;
    let namespace = case
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str));
    let name = pod
        .pointer("/metadata/name")
        .or_else(|| pod.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .map(|n| n.trim_end_matches('-'));
    match ann_str(pod, ROLE_SESSION_NAME) {
        Some(s) => Some(s.to_owned()),
        None => match (namespace, name) {
            (Some(ns), Some(n)) => Some(format!("{ns}.{n}").chars().take(64).collect()),
            _ => None,
        },
    }
}

/// The warnings the contract asks for, word for word: each pod-only annotation on the
/// ServiceAccount has no effect.
fn account_warnings(account: Option<&AccountAnnotations>) -> Vec<String> {
    let Some(sa) = account else {
        return vec![];
    };
    POD_ONLY
        .iter()
        .filter(|key| sa.annotations.contains_key(**key))
        .map(|key| {
            format!(
                "annotation {key} on ServiceAccount {:?} has no effect: it is read from pods only",
                sa.name
            )
        })
        .collect()
}

fn oracle(case: &Case) -> Outcome {
    let pod = &case.pod;
    let spec = &pod["spec"];
    if opted_out(pod) {
        return Outcome::Skip;
    }
    let account = match account_in_scope(case) {
        Ok(account) => account,
        Err(denied) => return denied,
    };
    let levels = Levels { pod, account };
    let by_account = annotations_of(pod).and_then(|a| a.get(M2M_TOKEN)).is_none();
    if by_account && levels.get(Level::Account, M2M_TOKEN).is_none() {
        return Outcome::Skip;
    }
    let invalid = invalid_causes(case, account, by_account);
    if !invalid.is_empty() {
        return Outcome::Deny(invalid);
    }
    let token = levels.value(M2M_TOKEN).unwrap_or_default();
    let other_token_warning = !by_account
        && levels
            .get(Level::Account, M2M_TOKEN)
            .is_some_and(|theirs| theirs != token)
        && [ROLE_ARN, ROLE_NAME]
            .iter()
            .all(|k| levels.get(Level::Pod, k).is_none())
        && [ROLE_ARN, ROLE_NAME]
            .iter()
            .any(|k| levels.get(Level::Account, k).is_some());
    let mut reasons = Vec::new();
    let defaults = match &case.lookup {
        TokenLookup::Found(d) => d.clone(),
        TokenLookup::Unavailable => {
            reasons.push(Cause::Names("M2MToken"));
            TokenDefaults::default()
        }
        TokenLookup::NotFound | TokenLookup::Standalone => TokenDefaults {
            secret_name: token,
            ..TokenDefaults::default()
        },
    };
    let (role_arn, oidc, wait) = resolve(&levels, &defaults, &case.config, &mut reasons);
    reasons.extend(conflicts(case, wait.is_some()));
    if !reasons.is_empty() {
        return Outcome::Deny(reasons);
    }
    let any_selected = user_containers(pod)
        .iter()
        .any(|(_, _, c)| case.selection.selects(name_of(c)));
    let has_wait = items(spec, "initContainers")
        .iter()
        .any(|c| name_of(c) == WAIT_CONTAINER);
    let label = |key: &str| {
        pod.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    };
    let legacy = label(LEGACY_INJECT_LABEL).filter(|v| *v == "true" && !case.namespace_enabled);
    let odd_label = label(INJECTION_LABEL).is_some_and(|v| v.trim() != "enabled");
    Outcome::Inject(Box::new(Expected {
        secret_name: defaults.secret_name,
        role_arn: role_arn.unwrap_or_default(),
        oidc_provider_arn: oidc.unwrap_or_default(),
        session_name: session_name(case),
        sts_region: levels
            .value(STS_REGION)
            .or(case.config.default_sts_region.clone()),
        vpc: levels
            .value(STS_VPC_ENDPOINT)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        init_wait: wait.filter(|_| any_selected && !is_windows(spec) && !has_wait),
        add_volume: !items(spec, "volumes").iter().any(|v| name_of(v) == VOLUME),
        warnings: account_warnings(account),
        legacy_warning: legacy.is_some(),
        odd_label_warning: odd_label,
        other_token_warning,
        provenance: levels.provenance(by_account),
    }))
}

// ---------------------------------------------------------------------------------------------
// Running the webhook on a case.

/// `mutate` with the case's scope: its namespace, whether that is labelled, its ServiceAccount
/// (which `mutate` must ignore outside a labelled namespace).
fn run(case: &Case, pod: &Value) -> Result<Mutation, crate_mutate::Denial> {
    let lookup = case.lookup.clone();
    let scope = Scope {
        namespace: case.namespace.as_deref(),
        namespace_enabled: case.namespace_enabled,
        service_account: &case.account,
    };
    mutate(pod, &scope, &case.config, |_| lookup)
}

fn apply(pod: &Value, patch: &json_patch::Patch) -> Result<Value, String> {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The pod as the webhook reads it from an AdmissionReview (`webhook::prune`, only the fields
/// `mutate` reads) gets exactly the answer the whole pod gets: the same patch, warnings or
/// denial. (The differential check of the pruned reading against the whole tree.)
fn pruned_pod_gets_the_same_answer(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(&r.case.pod).unwrap();
    let pruned = idaas_projector::webhook::prune::pod_from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("the pruned reading failed: {e}")))?;
    let answer = run(r.case, &pruned);
    prop_assert_eq!(&answer, &r.answer, "pruned pod: {}", pruned);
    Ok(())
}

/// The same case through the AdmissionReview envelope, from the entry its namespace calls.
fn check_review(r: &Ran<'_>, uid: &str, operation: &str) -> Result<(), TestCaseError> {
    let case = r.case;
    let mut request = json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": operation,
        "object": case.pod,
    });
    if let Some(ns) = &case.namespace {
        request["namespace"] = json!(ns);
    }
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    }))
    .unwrap();
    let resolver = FixedResolver {
        token: case.lookup.clone(),
        account: case.account.clone(),
    };
    let via = if case.namespace_enabled {
        Via::Namespace
    } else {
        Via::Annotation
    };
    let answer = review_now(&body, via, &case.config, &resolver)
        .map_err(|e| TestCaseError::fail(format!("a well-formed review got a 400: {e}")))?;
    let out: Value = serde_json::from_slice(&answer.body).unwrap();
    let response = &out["response"];
    prop_assert_eq!(&response["uid"], &json!(uid));
    prop_assert_eq!(&out["kind"], &json!("AdmissionReview"));
    let allowed = response["allowed"]
        .as_bool()
        .ok_or_else(|| TestCaseError::fail("no allowed"))?;
    if operation != "CREATE" {
        prop_assert!(allowed && response.get("patch").is_none(), "{}", response);
        return Ok(());
    }
    match &r.answer {
        Ok(Mutation::Skipped) => {
            prop_assert!(allowed && response.get("patch").is_none(), "{}", response)
        }
        Ok(Mutation::Injected { patch, warnings }) => {
            prop_assert!(allowed);
            match response.get("patch").and_then(Value::as_str) {
                None => prop_assert!(patch.0.is_empty()),
                Some(b64) => {
                    prop_assert_eq!(&response["patchType"], &json!("JSONPatch"));
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap();
                    let sent: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                    prop_assert_eq!(&sent, patch);
                }
            }
            let sent = response.get("warnings").cloned().unwrap_or(json!([]));
            prop_assert_eq!(sent, json!(warnings));
        }
        Err(denial) => {
            prop_assert!(!allowed);
            prop_assert_eq!(&response["status"]["code"], &json!(403));
            prop_assert_eq!(&response["status"]["message"], &json!(denial.0));
        }
    }
    Ok(())
}

/// A case run once: the webhook's answer, the patched pod, and the contract's verdict.
struct Ran<'a> {
    case: &'a Case,
    answer: Result<Mutation, crate_mutate::Denial>,
    /// The pod after the patch, and the patch, when the webhook injects.
    out: Option<(Value, json_patch::Patch)>,
    outcome: Outcome,
}

fn ran(case: &Case) -> Result<Ran<'_>, TestCaseError> {
    let answer = run(case, &case.pod);
    let out = match &answer {
        Ok(Mutation::Injected { patch, .. }) => {
            let out = apply(&case.pod, patch).map_err(|e| {
                TestCaseError::fail(format!(
                    "the patch does not apply: {e}\npatch: {}",
                    serde_json::to_string(patch).unwrap()
                ))
            })?;
            Some((out, patch.clone()))
        }
        Ok(Mutation::Skipped) | Err(_) => None,
    };
    Ok(Ran {
        case,
        answer,
        out,
        outcome: oracle(case),
    })
}

/// The output container that corresponds to the input container `(list, index)`: the webhook's
/// init container, when inserted, shifts the others by one.
fn out_container<'a>(case: &Case, out: &'a Value, list: &str, index: usize) -> &'a Value {
    let shift = usize::from(
        list == "initContainers"
            && items(&out["spec"], "initContainers").len()
                > items(&case.pod["spec"], "initContainers").len(),
    );
    &items(&out["spec"], list)[index + shift]
}

fn env_entry<'a>(container: &'a Value, name: &str) -> Vec<&'a Value> {
    items(container, "env")
        .iter()
        .filter(|e| name_of(e) == name)
        .collect()
}

/// Undoes what the webhook owns (the `injected` annotation, appended volumes, mounts and env,
/// the inserted init container) so that the rest can be compared with the input as a whole.
fn unpatch(orig: &Value, out: &Value) -> Value {
    fn restore_list(out: &mut Value, orig: &Value, key: &str) {
        let Some(obj) = out.as_object_mut() else {
            return;
        };
        match orig.get(key) {
            None => {
                obj.remove(key);
            }
            Some(Value::Array(a)) => {
                if let Some(Value::Array(b)) = obj.get_mut(key) {
                    b.truncate(a.len());
                }
            }
            Some(other) => {
                obj.insert(key.to_owned(), other.clone());
            }
        }
    }
    let mut u = out.clone();
    if let Some(a) = u
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        match annotations_of(orig).and_then(|o| o.get(INJECTED)) {
            Some(v) => {
                a.insert(INJECTED.to_owned(), v.clone());
            }
            None => {
                a.remove(INJECTED);
            }
        }
    }
    // A pod without annotations (one opted in by its ServiceAccount) gets the object for the
    // `injected` annotation.
    if annotations_of(orig).is_none()
        && let Some(meta) = u.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.get("annotations") == Some(&json!({}))
    {
        match orig.pointer("/metadata/annotations") {
            Some(v) => meta.insert("annotations".to_owned(), v.clone()),
            None => meta.remove("annotations"),
        };
    }
    let orig_spec = &orig["spec"];
    if let Some(spec) = u.get_mut("spec") {
        restore_list(spec, orig_spec, "volumes");
        let orig_init = items(orig_spec, "initContainers").len();
        if let Some(Value::Array(init)) = spec.get_mut("initContainers")
            && init.len() == orig_init + 1
            && name_of(&init[0]) == WAIT_CONTAINER
        {
            init.remove(0);
        }
        restore_list(spec, orig_spec, "initContainers");
        for list in ["containers", "initContainers"] {
            let originals = items(orig_spec, list);
            if let Some(Value::Array(cs)) = spec.get_mut(list) {
                for (c, o) in cs.iter_mut().zip(originals) {
                    restore_list(c, o, "env");
                    restore_list(c, o, "volumeMounts");
                }
            }
        }
    }
    u
}

/// Whether a patch path is one the webhook owns.
fn owned_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match parts.as_slice() {
        ["metadata", "annotations", "idaas-projector.io~1injected"] => true,
        // A pod without annotations gets the object.
        ["metadata", "annotations"] => true,
        ["spec", "volumes"] | ["spec", "volumes", "-"] => true,
        ["spec", "initContainers"] | ["spec", "initContainers", "0"] => true,
        [
            "spec",
            "containers" | "initContainers",
            i,
            "env" | "volumeMounts",
        ] => i.parse::<usize>().is_ok(),
        [
            "spec",
            "containers" | "initContainers",
            i,
            "env" | "volumeMounts",
            "-",
        ] => i.parse::<usize>().is_ok(),
        _ => false,
    }
}

fn the_volume(secret: &str) -> Value {
    json!({
        "name": VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [{"secret": {
                "name": secret,
                "items": [{"key": "token", "path": "token"}],
                "optional": true,
            }}],
        }
    })
}

fn props_config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failures are kept as plain tests below, not as a regressions file.
        failure_persistence: None,
        // ChaCha, the default, is most of the generation time in debug builds (every unpicked
        // `prop_oneof!` branch forks the generator).
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

/// Cases per property.
const CASES: u32 = 10_000;

// ---------------------------------------------------------------------------------------------
// Properties, as functions of a case (the plain tests below call them on hand-written pods too).

/// Property 1: never a panic; `review` answers every well-formed review with its uid, and
/// agrees with `mutate` on pod creations.
fn never_panics(r: &Ran<'_>, uid: &str, operation: &str) -> Result<(), TestCaseError> {
    // `mutate` already ran (in `ran`) without a panic.
    check_review(r, uid, operation)
}

/// Property 2: mutate(apply(mutate(pod))) is an empty patch: no denial, and the same warnings.
fn idempotent(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let (Ok(Mutation::Injected { warnings, .. }), Some((out, _))) = (&r.answer, &r.out) else {
        return Ok(());
    };
    match run(r.case, out) {
        Ok(Mutation::Injected {
            patch,
            warnings: again,
        }) => {
            prop_assert!(
                patch.0.is_empty(),
                "second call patches {}\nafter the first: {}",
                serde_json::to_string(&patch).unwrap(),
                out
            );
            prop_assert_eq!(&again, warnings);
        }
        other => prop_assert!(false, "second call: {:?}\non {}", other, out),
    }
    Ok(())
}

/// The sweep's classification agrees with the answer: a pod as the webhook patched it (its
/// name then generated from `generateName`, the configured init image since changed by an
/// upgrade) is current; the pod as submitted is not injected when it opts in; a skipped pod
/// does not opt in.
fn classified_as_the_webhook_decided(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let case = r.case;
    let scope = Scope {
        namespace: case.namespace.as_deref(),
        namespace_enabled: case.namespace_enabled,
        service_account: &case.account,
    };
    let classify = |pod: &Value, config: &MutateConfig| {
        crate_mutate::classify(pod.clone(), &scope, config, |_| case.lookup.clone())
    };
    let before = classify(&case.pod, &case.config);
    match (&r.answer, &r.out) {
        (Ok(Mutation::Skipped), _) => {
            prop_assert_eq!(before.state, PodState::NotOptedIn);
        }
        (Ok(Mutation::Injected { .. }), Some((out, _))) => {
            let mut running = out.clone();
            if let Some(prefix) = running
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                && running.pointer("/metadata/name").is_none()
            {
                running["metadata"]["name"] = json!(format!("{prefix}x7k2p"));
            }
            // A copied pod that arrived with a wait container of another image keeps it, and
            // is recognised by the configured image only.
            let copied = case
                .pod
                .pointer("/spec/initContainers")
                .is_some_and(|list| {
                    list.as_array().is_some_and(|l| {
                        l.iter()
                            .any(|c| c["name"] == crate_mutate::INIT_CONTAINER_NAME)
                    })
                });
            let upgraded = MutateConfig {
                init_image: "registry.example/idaas-projector:next".into(),
                ..case.config.clone()
            };
            let upgraded = if copied { &case.config } else { &upgraded };
            let after = classify(&running, upgraded);
            prop_assert_eq!(
                after.state,
                PodState::Current,
                "{:?}\non {}",
                after,
                running
            );
            if case
                .pod
                .pointer("/metadata/annotations/idaas-projector.io~1injected")
                .is_none()
            {
                prop_assert_eq!(before.state, PodState::NotInjected);
            }
        }
        (Err(denial), _) => {
            prop_assert_ne!(before.state, PodState::Current);
            prop_assert_ne!(before.state, PodState::NotOptedIn, "denied: {}", denial);
            prop_assert_eq!(before.refusal.as_deref(), Some(denial.0.as_str()));
        }
        _ => {}
    }
    Ok(())
}

fn expected_injection<'a>(r: &'a Ran<'_>) -> Result<&'a Expected, TestCaseError> {
    match &r.outcome {
        Outcome::Inject(expected) => Ok(expected),
        other => Err(TestCaseError::fail(format!(
            "injected where the contract says {other:?}"
        ))),
    }
}

/// Property 3: every env var the user set is kept exactly (docs/design.md: "A variable the user
/// already set on a container stays as the user set it"; `value` or `valueFrom` alike), and so
/// are envFrom, volumes and mounts; the variables the user did not set get the resolved values;
/// containers left out by skip/only are untouched.
fn user_settings_kept(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let (case, Some((out, _))) = (r.case, &r.out) else {
        return Ok(());
    };
    let expected = expected_injection(r)?;
    let orig_volumes = items(&case.pod["spec"], "volumes");
    prop_assert_eq!(
        &items(&out["spec"], "volumes")[..orig_volumes.len()],
        orig_volumes
    );
    for list in ["containers", "initContainers"] {
        for (i, c) in items(&case.pod["spec"], list).iter().enumerate() {
            let o = out_container(case, out, list, i);
            prop_assert_eq!(o.get("envFrom"), c.get("envFrom"));
            let user_env = items(c, "env");
            prop_assert_eq!(&items(o, "env")[..user_env.len()], user_env);
            for e in user_env {
                prop_assert_eq!(env_entry(o, name_of(e)), vec![e], "{}", name_of(e));
            }
            let user_mounts = items(c, "volumeMounts");
            prop_assert_eq!(&items(o, "volumeMounts")[..user_mounts.len()], user_mounts);

            let ours = name_of(c) == WAIT_CONTAINER && list == "initContainers";
            if ours || !case.selection.selects(name_of(c)) {
                prop_assert_eq!(o, c, "a container left out is untouched");
                continue;
            }
            let mut want = vec![
                (ENV_ROLE_ARN, Some(expected.role_arn.clone())),
                (
                    ENV_OIDC_PROVIDER_ARN,
                    Some(expected.oidc_provider_arn.clone()),
                ),
                (
                    ENV_OIDC_TOKEN_FILE,
                    Some(paths_for(&case.pod["spec"]).1.to_owned()),
                ),
                (ENV_ROLE_SESSION_NAME, expected.session_name.clone()),
            ];
            if let Some(r) = &expected.sts_region {
                want.push((ENV_STS_REGION, Some(r.clone())));
            }
            if expected.vpc {
                want.push((ENV_VPC_ENDPOINT, Some("true".to_owned())));
            }
            for (name, value) in &want {
                let found = env_entry(o, name);
                prop_assert_eq!(found.len(), 1, "{} in {}", name, o);
                if user_env.iter().any(|e| name_of(e) == *name) {
                    continue;
                }
                let got = found[0]["value"].as_str().unwrap_or_default();
                prop_assert_eq!(found[0], &json!({"name": name, "value": got}));
                match value {
                    Some(v) => prop_assert_eq!(got, v.as_str(), "{}", name),
                    None => prop_assert!(
                        (2..=64).contains(&got.len())
                            && got
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || ".@_-".contains(c)),
                        "{} = {:?}",
                        name,
                        got
                    ),
                }
            }
            for name in [ENV_STS_REGION, ENV_VPC_ENDPOINT] {
                if !want.iter().any(|(n, _)| *n == name) {
                    prop_assert_eq!(
                        env_entry(o, name),
                        env_entry(c, name),
                        "{} is only injected on request",
                        name
                    );
                }
            }
        }
    }
    Ok(())
}

/// Property 4: everything the webhook does not own, unknown fields included, is unchanged; the
/// patch only adds at the paths it owns (or replaces its own annotation).
fn everything_else_unchanged(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let (case, Some((out, patch))) = (r.case, &r.out) else {
        return Ok(());
    };
    for op in &patch.0 {
        let v = serde_json::to_value(op).unwrap();
        let path = v["path"].as_str().unwrap_or_default();
        prop_assert!(owned_path(path), "the patch touches {}", path);
        match v["op"].as_str() {
            Some("add") => {}
            Some("replace") => {
                prop_assert_eq!(path, "/metadata/annotations/idaas-projector.io~1injected")
            }
            other => prop_assert!(false, "op {:?}", other),
        }
    }
    prop_assert!(
        unpatch(&case.pod, out) == case.pod,
        "the patch changed what the webhook does not own:\nbefore: {}\nafter:  {}",
        case.pod,
        out
    );
    // The same, said directly for the unknown fields and every other field of a container.
    for (path, key) in [
        ("", "x-unknown"),
        ("", "futureField"),
        ("/metadata", "x-unknown"),
        ("/metadata", "futureField"),
        ("/spec", "x-unknown"),
        ("/spec", "futureField"),
    ] {
        let before = case.pod.pointer(path).and_then(|o| o.get(key));
        prop_assert_eq!(out.pointer(path).and_then(|o| o.get(key)), before);
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in items(&case.pod["spec"], list).iter().enumerate() {
            let o = out_container(case, out, list, i);
            for (k, v) in c.as_object().unwrap() {
                if k != "env" && k != "volumeMounts" {
                    prop_assert_eq!(o.get(k), Some(v), "{}[{}].{}", list, i, k);
                }
            }
        }
    }
    Ok(())
}

/// Property 5: the patched pod is valid where the webhook touched it; a denial is one non-empty
/// line.
fn output_valid(r: &Ran<'_>) -> Result<(), TestCaseError> {
    let case = r.case;
    let out = match &r.answer {
        Err(denial) => {
            prop_assert!(!denial.0.trim().is_empty());
            prop_assert!(
                !denial.0.contains('\n') && !denial.0.contains('\r'),
                "{:?}",
                denial.0
            );
            return Ok(());
        }
        Ok(Mutation::Skipped) => return Ok(()),
        Ok(Mutation::Injected { .. }) => &r.out.as_ref().expect("injected").0,
    };
    let expected = expected_injection(r)?;
    let spec = &out["spec"];

    let hash = ann_str(out, INJECTED).unwrap_or_default();
    prop_assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        hash
    );

    let volumes: Vec<&str> = items(spec, "volumes").iter().map(name_of).collect();
    let unique_volumes: HashSet<&str> = volumes.iter().copied().collect();
    prop_assert_eq!(
        unique_volumes.len(),
        volumes.len(),
        "volume names {:?}",
        volumes
    );
    prop_assert!(unique_volumes.contains(VOLUME));
    if expected.add_volume {
        let v = items(spec, "volumes").last().unwrap();
        prop_assert_eq!(v, &the_volume(&expected.secret_name));
    }

    let all: Vec<&Value> = items(spec, "containers")
        .iter()
        .chain(items(spec, "initContainers"))
        .collect();
    let names: Vec<&str> = all.iter().map(|c| name_of(c)).collect();
    let unique_names: HashSet<&str> = names.iter().copied().collect();
    prop_assert_eq!(
        unique_names.len(),
        names.len(),
        "container names {:?}",
        names
    );
    for c in &all {
        let env: Vec<&str> = items(c, "env").iter().map(name_of).collect();
        let unique_env: HashSet<&str> = env.iter().copied().collect();
        prop_assert_eq!(unique_env.len(), env.len(), "env names {:?}", env);
        let mounts = items(c, "volumeMounts");
        let paths: HashSet<&str> = mounts
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        prop_assert_eq!(paths.len(), mounts.len(), "mount paths of {}", name_of(c));
        for m in mounts {
            prop_assert!(
                unique_volumes.contains(name_of(m)),
                "mount of a missing volume {}",
                m
            );
        }
    }

    for (_, _, c) in user_containers(out) {
        if case.selection.selects(name_of(c)) {
            prop_assert!(
                items(c, "volumeMounts").iter().any(|m| name_of(m) == VOLUME
                    && same_path(m["mountPath"].as_str().unwrap_or(""), paths_for(spec).0)),
                "{} mounts the token",
                name_of(c)
            );
        }
    }

    let init = items(spec, "initContainers");
    let before = items(&case.pod["spec"], "initContainers");
    match expected.init_wait {
        None => prop_assert_eq!(init.len(), before.len(), "no init container is added"),
        Some(wait) => {
            prop_assert_eq!(init.len(), before.len() + 1);
            let w = &init[0];
            prop_assert_eq!(name_of(w), WAIT_CONTAINER);
            prop_assert_eq!(w["image"].as_str(), Some(INIT_IMAGE));
            prop_assert!(
                w.get("restartPolicy").is_none(),
                "a plain init container, not a sidecar"
            );
            let args = w["args"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(args.len(), 5);
            prop_assert_eq!(
                &args[..4],
                &[
                    json!("wait-for-token"),
                    json!("--file"),
                    json!(TOKEN_FILE),
                    json!("--timeout")
                ][..]
            );
            let timeout = humantime::parse_duration(args[4].as_str().unwrap_or_default());
            prop_assert_eq!(timeout.ok(), Some(wait));
            prop_assert_eq!(
                &w["volumeMounts"],
                &json!([{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": true}])
            );
            let sc = &w["securityContext"];
            prop_assert_eq!(&sc["runAsNonRoot"], &json!(true));
            prop_assert_eq!(&sc["runAsUser"], &json!(65532));
            prop_assert_eq!(&sc["allowPrivilegeEscalation"], &json!(false));
            prop_assert_eq!(&sc["readOnlyRootFilesystem"], &json!(true));
            prop_assert_eq!(&sc["capabilities"]["drop"], &json!(["ALL"]));
            prop_assert_eq!(&sc["seccompProfile"]["type"], &json!("RuntimeDefault"));
            prop_assert_eq!(
                &w["resources"],
                &json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}})
            );
        }
    }
    Ok(())
}

/// Property 6: skipped, denied or injected exactly as the contract says; a denial names its
/// cause; an injection carries the contract's warnings.
fn decision_follows_contract(r: &Ran<'_>) -> Result<(), TestCaseError> {
    match (&r.outcome, &r.answer) {
        (Outcome::Skip, Ok(Mutation::Skipped)) => {}
        (Outcome::Inject(expected), Ok(Mutation::Injected { warnings, .. })) => {
            contract_warnings(expected, warnings)?
        }
        (Outcome::Deny(causes), Err(denial)) => prop_assert!(
            causes.iter().any(|c| c.explains(&denial.0)),
            "denial {:?} names none of {:?}",
            denial.0,
            causes
        ),
        (want, got) => prop_assert!(false, "contract: {:?}\nwebhook: {:?}", want, got),
    }
    Ok(())
}

/// The ServiceAccount's pod-only annotations each warn, word for word, and nothing else says
/// "has no effect"; the legacy routing label warns that it is deprecated, and only it.
fn contract_warnings(expected: &Expected, warnings: &[String]) -> Result<(), TestCaseError> {
    for want in &expected.warnings {
        prop_assert!(warnings.contains(want), "no {:?} in {:?}", want, warnings);
    }
    let no_effect = warnings
        .iter()
        .filter(|w| w.contains("has no effect"))
        .count();
    prop_assert_eq!(no_effect, expected.warnings.len(), "{:?}", warnings);
    let deprecated: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("deprecated"))
        .collect();
    prop_assert_eq!(
        deprecated.len(),
        usize::from(expected.legacy_warning),
        "{:?}",
        warnings
    );
    for w in deprecated {
        prop_assert!(w.contains(LEGACY_INJECT_LABEL), "{:?}", w);
    }
    let odd = warnings
        .iter()
        .filter(|w| w.contains(INJECTION_LABEL) && w.contains("means nothing"))
        .count();
    prop_assert_eq!(
        odd,
        usize::from(expected.odd_label_warning),
        "{:?}",
        warnings
    );
    let other = warnings
        .iter()
        .filter(|w| w.contains("while its ServiceAccount") && w.contains("role comes from"))
        .count();
    prop_assert_eq!(
        other,
        usize::from(expected.other_token_warning),
        "{:?}",
        warnings
    );
    Ok(())
}

/// All six on one case.
fn all_properties(case: &Case) -> Result<(), TestCaseError> {
    let r = ran(case)?;
    never_panics(&r, "0f1e2d3c", "CREATE")?;
    idempotent(&r)?;
    user_settings_kept(&r)?;
    everything_else_unchanged(&r)?;
    output_valid(&r)?;
    decision_follows_contract(&r)
}

// Each generated pod is checked against three properties at once: generating a pod costs more
// than checking it in debug builds, and this way the two tests below (run in parallel) check
// every property on 10,000 pods each, 20,000 pods in all.
proptest! {
    #![proptest_config(props_config())]

    /// Properties 1, 2 and 6, on the answer: never a panic (`review` echoes the uid and agrees
    /// with `mutate`), idempotent, and skipped/denied/injected as the contract says.
    #[test]
    fn answers_never_panic_are_idempotent_and_follow_the_contract(
        case in arb_case(),
        uid in re("[a-f0-9-]{1,36}"),
        operation in prop_oneof![9 => Just("CREATE"), 1 => Just("UPDATE")],
    ) {
        let r = ran(&case)?;
        never_panics(&r, &uid, operation)?;
        pruned_pod_gets_the_same_answer(&r)?;
        idempotent(&r)?;
        classified_as_the_webhook_decided(&r)?;
        decision_follows_contract(&r)?;
    }

    /// Properties 3, 4 and 5, on the patched pod: the user's env, envFrom, volumes and mounts
    /// are kept, nothing the webhook does not own changes (unknown fields included), and the
    /// pod is valid where the webhook touched it.
    #[test]
    fn patched_pods_keep_user_settings_and_unknown_fields_and_are_valid(case in arb_case()) {
        let r = ran(&case)?;
        user_settings_kept(&r)?;
        everything_else_unchanged(&r)?;
        output_valid(&r)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The generator's coverage, and shapes worth a plain test.

fn generate(n: usize) -> Vec<Case> {
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::XorShift),
    );
    let strategy = arb_case();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// A coverage count: what, how many cases of the sample have it, and the least expected.
type Stat = (&'static str, usize, usize);

fn count(cases: &[Case], f: impl Fn(&Case) -> bool) -> usize {
    cases.iter().filter(|c| f(c)).count()
}

fn all_containers(c: &Case) -> Vec<Value> {
    items(&c.pod["spec"], "containers")
        .iter()
        .chain(items(&c.pod["spec"], "initContainers"))
        .cloned()
        .collect()
}

/// Shapes of the containers: sidecars, counts, env, mounts, names.
fn container_stats(cases: &[Case]) -> Vec<Stat> {
    vec![
        (
            "native sidecar",
            count(cases, |c| {
                items(&c.pod["spec"], "initContainers")
                    .iter()
                    .any(|i| i["restartPolicy"] == "Always")
            }),
            300,
        ),
        (
            "4 containers",
            count(cases, |c| items(&c.pod["spec"], "containers").len() == 4),
            300,
        ),
        (
            "3 init containers",
            count(cases, |c| {
                items(&c.pod["spec"], "initContainers").len() == 3
            }),
            200,
        ),
        (
            "user sets an injected variable",
            count(cases, |c| {
                all_containers(c).iter().any(|x| {
                    items(x, "env")
                        .iter()
                        .any(|e| INJECTED_ENV.contains(&name_of(e)))
                })
            }),
            1000,
        ),
        (
            "... through valueFrom",
            count(cases, |c| {
                all_containers(c).iter().any(|x| {
                    items(x, "env")
                        .iter()
                        .any(|e| INJECTED_ENV.contains(&name_of(e)) && e.get("valueFrom").is_some())
                })
            }),
            300,
        ),
        (
            "envFrom",
            count(cases, |c| {
                all_containers(c)
                    .iter()
                    .any(|x| !items(x, "envFrom").is_empty())
            }),
            1000,
        ),
        (
            "mount at the webhook's path",
            count(cases, |c| {
                all_containers(c).iter().any(|x| {
                    items(x, "volumeMounts")
                        .iter()
                        .any(|m| same_path(m["mountPath"].as_str().unwrap_or(""), MOUNT_PATH))
                })
            }),
            100,
        ),
        (
            "volume named like the webhook's",
            count(cases, |c| {
                items(&c.pod["spec"], "volumes")
                    .iter()
                    .any(|v| name_of(v) == VOLUME)
            }),
            100,
        ),
        (
            "container named like the wait container",
            count(cases, |c| {
                all_containers(c)
                    .iter()
                    .any(|x| name_of(x) == WAIT_CONTAINER)
            }),
            100,
        ),
    ]
}

/// Shapes of the pod: Windows, annotations, unknown fields, null lists.
fn pod_stats(cases: &[Case]) -> Vec<Stat> {
    let spec_of = |c: &Case| c.pod["spec"].clone();
    vec![
        ("windows", count(cases, |c| is_windows(&c.pod["spec"])), 200),
        (
            "injected annotation already there",
            count(cases, |c| ann_str(&c.pod, INJECTED).is_some()),
            150,
        ),
        (
            "only-containers",
            count(cases, |c| ann_str(&c.pod, ONLY_CONTAINERS).is_some()),
            300,
        ),
        (
            "skip-containers",
            count(cases, |c| ann_str(&c.pod, SKIP_CONTAINERS).is_some()),
            300,
        ),
        (
            "token-wait",
            count(cases, |c| ann_str(&c.pod, TOKEN_WAIT).is_some()),
            500,
        ),
        (
            "unknown spec field",
            count(cases, |c| {
                c.pod["spec"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k.starts_with('x') || k == "futureField")
            }),
            1000,
        ),
        (
            "null list",
            count(cases, |c| {
                c.pod["spec"]["volumes"].is_null() && c.pod["spec"].get("volumes").is_some()
                    || all_containers(c)
                        .iter()
                        .any(|x| x.get("env") == Some(&Value::Null))
            }),
            100,
        ),
        (
            "windows by node affinity",
            count(cases, |c| affinity_requires_windows(&spec_of(c))),
            120,
        ),
        (
            "windows by the beta nodeSelector label",
            count(cases, |c| {
                c.pod["spec"]["nodeSelector"]["beta.kubernetes.io/os"] == "windows"
            }),
            70,
        ),
        (
            "node affinity that is not windows-only",
            count(cases, |c| {
                c.pod["spec"].get("affinity").is_some() && !affinity_requires_windows(&spec_of(c))
            }),
            120,
        ),
    ]
}

/// The ServiceAccount in scope, for counting.
fn account_in(c: &Case) -> Option<&AccountAnnotations> {
    match (&c.account, c.namespace_enabled) {
        (AccountLookup::Found(sa), true) => Some(sa),
        _ => None,
    }
}

/// Whether the M2MToken found sets what the ServiceAccount overrides.
fn account_over_token(c: &Case, e: &Expected) -> bool {
    let TokenLookup::Found(d) = &c.lookup else {
        return false;
    };
    let from = |what: &str| e.provenance.from_account.contains(&what);
    from("role") && d.role_arn.is_some() || from(OIDC_PROVIDER_ARN) && d.oidc_provider_arn.is_some()
}

/// The decisions: skipped, denied, injected, and by which rule of the opt-in levels.
fn decision_stats(cases: &[Case], outcomes: &[Outcome]) -> Vec<Stat> {
    let pairs: Vec<(&Case, &Outcome)> = cases.iter().zip(outcomes).collect();
    let n = |f: &dyn Fn(&Case, &Outcome) -> bool| pairs.iter().filter(|(c, o)| f(c, o)).count();
    let injected = |f: &dyn Fn(&Case, &Expected) -> bool| {
        n(&|c, o| matches!(o, Outcome::Inject(e) if f(c, e)))
    };
    let denied = |f: &dyn Fn(&Case, &[Cause]) -> bool| {
        n(&|c, o| matches!(o, Outcome::Deny(causes) if f(c, causes)))
    };
    let both_roles = |keys: &dyn Fn(&str) -> bool| keys(ROLE_ARN) && keys(ROLE_NAME);
    vec![
        ("injected", injected(&|_, _| true), 1100),
        ("denied", denied(&|_, _| true), 150),
        ("skipped", n(&|_, o| matches!(o, Outcome::Skip)), 300),
        (
            "labelled namespace",
            count(cases, |c| c.namespace_enabled),
            1300,
        ),
        (
            "opted in by the ServiceAccount",
            injected(&|_, e| e.provenance.opted_in_by_account),
            150,
        ),
        (
            "a ServiceAccount setting over the M2MToken's",
            injected(&account_over_token),
            35,
        ),
        (
            "a pod setting over the ServiceAccount's",
            injected(&|_, e| !e.provenance.pod_over_account.is_empty()),
            150,
        ),
        (
            "role-name composed",
            injected(&|_, e| e.provenance.role_by_name),
            150,
        ),
        (
            "... from the ServiceAccount's role-name",
            injected(&|_, e| {
                e.provenance.role_by_name && e.provenance.from_account.contains(&"role")
            }),
            15,
        ),
        (
            "role-arn and role-name on one level",
            denied(&|c, _| {
                both_roles(&|k| ann_str(&c.pod, k).is_some())
                    || account_in(c)
                        .is_some_and(|sa| both_roles(&|k| sa.annotations.contains_key(k)))
            }),
            60,
        ),
        (
            "denied for a ServiceAccount's annotation",
            denied(&|_, causes| causes.iter().any(|c| matches!(c, Cause::Account(..)))),
            80,
        ),
        (
            "opted out by label (else opted in)",
            count(cases, |c| {
                opted_out(&c.pod)
                    && (ann_str(&c.pod, M2M_TOKEN).is_some()
                        || account_in(c).is_some_and(|sa| sa.annotations.contains_key(M2M_TOKEN)))
            }),
            100,
        ),
        (
            "ServiceAccount unavailable",
            denied(&|c, _| {
                matches!(c.account, AccountLookup::Unavailable(_)) && c.namespace_enabled
            }),
            20,
        ),
        (
            "ServiceAccount ignored outside a labelled namespace",
            n(&|c, o| {
                !c.namespace_enabled
                    && !matches!(o, Outcome::Deny(_))
                    && matches!(&c.account, AccountLookup::Found(sa) if !sa.annotations.is_empty())
            }),
            400,
        ),
        (
            "pod-only annotations on the ServiceAccount warn",
            injected(&|_, e| !e.warnings.is_empty()),
            45,
        ),
        (
            "legacy routing label warns",
            injected(&|_, e| e.legacy_warning),
            80,
        ),
    ]
}

/// The generator reaches the shapes it claims to (a deterministic sample of 3,000 cases).
#[test]
fn generator_covers_the_interesting_shapes() {
    let cases = generate(3000);
    let outcomes: Vec<Outcome> = cases.iter().map(oracle).collect();
    let mut stats = decision_stats(&cases, &outcomes);
    stats.extend(container_stats(&cases));
    stats.extend(pod_stats(&cases));
    let report: Vec<String> = stats
        .iter()
        .map(|(what, n, _)| format!("{what}: {n}"))
        .collect();
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        if let Outcome::Deny(reasons) = o {
            for r in reasons {
                *causes.entry(r.to_string()).or_default() += 1;
            }
        }
    }
    eprintln!("generator coverage over 3000 cases: {}", report.join(", "));
    eprintln!("denial causes: {causes:?}");
    for (what, n, min) in stats {
        assert!(n >= min, "{what}: {n} < {min}; {}", report.join(", "));
    }
}

#[test]
fn contract_names_match_the_crate() {
    assert_eq!(crate_annotations::M2M_TOKEN, M2M_TOKEN);
    assert_eq!(crate_annotations::ROLE_ARN, ROLE_ARN);
    assert_eq!(crate_annotations::ROLE_NAME, ROLE_NAME);
    assert_eq!(crate_annotations::POD_ONLY, POD_ONLY);
    assert_eq!(crate_annotations::INJECTION_LABEL, INJECTION_LABEL);
    assert_eq!(crate_annotations::DISABLED, "disabled");
    assert_eq!(crate_annotations::LEGACY_INJECT_LABEL, LEGACY_INJECT_LABEL);
    assert_eq!(crate_mutate::OS_LABELS, OS_LABELS);
    assert_eq!(crate_mutate::WINDOWS_MOUNT_PATH, WINDOWS_MOUNT_PATH);
    assert_eq!(crate_mutate::WINDOWS_TOKEN_FILE, WINDOWS_TOKEN_FILE);
    assert_eq!(crate_annotations::OIDC_PROVIDER_ARN, OIDC_PROVIDER_ARN);
    assert_eq!(crate_annotations::ROLE_SESSION_NAME, ROLE_SESSION_NAME);
    assert_eq!(crate_annotations::STS_REGION, STS_REGION);
    assert_eq!(crate_annotations::STS_VPC_ENDPOINT, STS_VPC_ENDPOINT);
    assert_eq!(crate_annotations::SKIP_CONTAINERS, SKIP_CONTAINERS);
    assert_eq!(crate_annotations::ONLY_CONTAINERS, ONLY_CONTAINERS);
    assert_eq!(crate_annotations::TOKEN_WAIT, TOKEN_WAIT);
    assert_eq!(crate_annotations::INJECTED, INJECTED);
    assert_eq!(crate_mutate::VOLUME_NAME, VOLUME);
    assert_eq!(crate_mutate::MOUNT_PATH, MOUNT_PATH);
    assert_eq!(crate_mutate::TOKEN_FILE, TOKEN_FILE);
    assert_eq!(crate_mutate::INIT_CONTAINER_NAME, WAIT_CONTAINER);
    assert_eq!(crate_mutate::env::ROLE_ARN, ENV_ROLE_ARN);
    assert_eq!(crate_mutate::env::OIDC_PROVIDER_ARN, ENV_OIDC_PROVIDER_ARN);
    assert_eq!(crate_mutate::env::OIDC_TOKEN_FILE, ENV_OIDC_TOKEN_FILE);
    assert_eq!(crate_mutate::env::ROLE_SESSION_NAME, ENV_ROLE_SESSION_NAME);
    assert_eq!(crate_mutate::env::STS_REGION, ENV_STS_REGION);
    assert_eq!(crate_mutate::env::VPC_ENDPOINT_ENABLED, ENV_VPC_ENDPOINT);
}

// ---------------------------------------------------------------------------------------------
// Hand-written shapes, checked against every property.

fn hand_case(pod: Value, selection: Sel) -> Case {
    Case {
        pod,
        namespace: Some("shop".to_owned()),
        namespace_enabled: false,
        account: AccountLookup::Absent,
        invalid_account_annotations: vec![],
        lookup: TokenLookup::Standalone,
        config: MutateConfig {
            init_image: INIT_IMAGE.to_owned(),
            default_oidc_provider_arn: Some(
                "acs:ram::1234567890123456:oidc-provider/idaas".to_owned(),
            ),
            default_sts_region: None,
            default_token_wait: Duration::from_secs(300),
        },
        invalid_annotations: vec![],
        selection,
    }
}

fn opted_in(extra: Value) -> Value {
    let mut annotations = json!({
        "idaas-projector.io/m2m-token": "payments",
        "idaas-projector.io/role-arn": "acs:ram::1234567890123456:role/payments",
    });
    for (k, v) in extra.as_object().unwrap() {
        annotations[k] = v.clone();
    }
    annotations
}

/// Runs every property, then returns the patched pod, the patch and the warnings.
fn injected(case: &Case) -> (Value, json_patch::Patch, Vec<String>) {
    all_properties(case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    match run(case, &case.pod) {
        Ok(Mutation::Injected { patch, warnings }) => {
            let out = apply(&case.pod, &patch).unwrap();
            (out, patch, warnings)
        }
        other => panic!("expected an injection, got {other:?}"),
    }
}

#[test]
fn native_sidecar_and_plain_init_container() {
    let case = hand_case(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": opted_in(json!({}))},
            "spec": {
                "initContainers": [
                    {"name": "migrate", "image": "migrate:1"},
                    {"name": "proxy", "image": "proxy:1", "restartPolicy": "Always",
                     "env": [{"name": ENV_ROLE_ARN, "valueFrom": {"secretKeyRef": {"name": "ram", "key": "role"}}}]},
                ],
                "containers": [{"name": "app", "image": "app:1"}],
            }
        }),
        Sel::All,
    );
    let (out, _, warnings) = injected(&case);
    let init = items(&out["spec"], "initContainers");
    let names: Vec<&str> = init.iter().map(name_of).collect();
    assert_eq!(names, [WAIT_CONTAINER, "migrate", "proxy"]);
    assert_eq!(init[2]["restartPolicy"], "Always");
    assert_eq!(
        env_entry(&init[2], ENV_ROLE_ARN),
        [
            &json!({"name": ENV_ROLE_ARN, "valueFrom": {"secretKeyRef": {"name": "ram", "key": "role"}}})
        ]
    );
    assert_eq!(
        init[2]["volumeMounts"],
        json!([{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": true}])
    );
    assert_eq!(
        warnings,
        [format!(
            "container \"proxy\" sets {ENV_ROLE_ARN} itself; its value is kept"
        )]
    );
}

#[test]
fn every_injected_variable_already_set_by_the_user() {
    let env = json!([
        {"name": ENV_ROLE_ARN, "value": "acs:ram::1:role/mine"},
        {"name": ENV_OIDC_PROVIDER_ARN, "valueFrom": {"configMapKeyRef": {"name": "ram", "key": "oidc"}}},
        {"name": ENV_OIDC_TOKEN_FILE, "value": TOKEN_FILE},
        {"name": ENV_ROLE_SESSION_NAME},
        {"name": ENV_STS_REGION, "value": "cn-beijing"},
        {"name": ENV_VPC_ENDPOINT, "value": "false"},
    ]);
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({
                "idaas-projector.io/sts-region": "cn-hangzhou",
                "idaas-projector.io/sts-vpc-endpoint": "true",
            }))},
            "spec": {"containers": [{"name": "app", "image": "app:1", "env": env}]}
        }),
        Sel::All,
    );
    let (out, patch, warnings) = injected(&case);
    assert_eq!(out["spec"]["containers"][0]["env"], env);
    let paths: Vec<String> = patch
        .0
        .iter()
        .map(|op| {
            serde_json::to_value(op).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(!paths.iter().any(|p| p.contains("/env")), "{paths:?}");
    // Every variable but the token file (set to the very value the webhook would inject) warns.
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    assert!(!warnings.iter().any(|w| w.contains(ENV_OIDC_TOKEN_FILE)));
}

#[test]
fn null_lists_are_replaced() {
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({}))},
            "spec": {
                "volumes": null,
                "initContainers": null,
                "containers": [{"name": "app", "image": "app:1", "env": null, "volumeMounts": null}],
            }
        }),
        Sel::All,
    );
    let (out, _, _) = injected(&case);
    assert_eq!(items(&out["spec"], "volumes").len(), 1);
    assert_eq!(items(&out["spec"], "initContainers").len(), 1);
    assert_eq!(items(&out["spec"]["containers"][0], "env").len(), 4);
    assert_eq!(
        items(&out["spec"]["containers"][0], "volumeMounts").len(),
        1
    );
}

/// A pod copied from an injected one (`kubectl get -o yaml`) with a stale hash: its volume and
/// wait container count as the webhook's own, only the hash changes.
#[test]
fn copied_pod_keeps_its_volume_and_wait_container() {
    let wait = json!({
        "name": WAIT_CONTAINER, "image": "registry.example.com/idaas-projector:0.0.1",
        "args": ["wait-for-token", "--file", TOKEN_FILE, "--timeout", "1m"],
        "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": true}],
    });
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({INJECTED: "0123456789abcdef"}))},
            "spec": {
                "volumes": [the_volume("old-secret")],
                "initContainers": [wait],
                "containers": [{"name": "app", "image": "app:1"}],
            }
        }),
        Sel::All,
    );
    let (out, patch, _) = injected(&case);
    assert_eq!(out["spec"]["volumes"], json!([the_volume("old-secret")]));
    assert_eq!(out["spec"]["initContainers"], json!([wait]));
    assert_eq!(
        serde_json::to_value(&patch.0[0]).unwrap()["op"],
        "replace",
        "{patch:?}"
    );
}

#[test]
fn windows_pod_with_a_sidecar_gets_no_wait_container() {
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({}))},
            "spec": {
                "nodeSelector": {"kubernetes.io/os": "windows"},
                "initContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always"}],
                "containers": [{"name": "app", "image": "app:1"}],
            }
        }),
        Sel::All,
    );
    let (out, _, warnings) = injected(&case);
    let init = items(&out["spec"], "initContainers");
    assert_eq!(init.len(), 1);
    assert_eq!(env_entry(&init[0], ENV_OIDC_TOKEN_FILE).len(), 1);
    assert!(
        warnings.iter().any(|w| w.contains("Windows")),
        "{warnings:?}"
    );
}

#[test]
fn skipping_every_container_injects_only_the_volume() {
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({SKIP_CONTAINERS: "app, proxy"}))},
            "spec": {
                "initContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always"}],
                "containers": [{"name": "app", "image": "app:1"}],
            }
        }),
        Sel::Skip(vec!["app".to_owned(), "proxy".to_owned()]),
    );
    let (out, patch, warnings) = injected(&case);
    assert_eq!(patch.0.len(), 2, "the annotation and the volume: {patch:?}");
    assert_eq!(items(&out["spec"], "initContainers").len(), 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

/// Keys that need escaping in a JSON Pointer, and a mount of the token volume elsewhere.
#[test]
fn pointer_special_keys_and_a_second_mount_survive() {
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({"example.com/a~b": "c"}))},
            "spec": {
                "x/y": {"~0": [1, 2]},
                "containers": [{
                    "name": "app", "image": "app:1", "a/b": 1, "~x": {"y/z": 2},
                    "env": [{"name": "MODE", "value": "fast", "x~1": true}],
                    "volumeMounts": [{"name": VOLUME, "mountPath": "/tokens", "readOnly": true}],
                }],
            }
        }),
        Sel::All,
    );
    let (out, _, _) = injected(&case);
    let mounts = items(&out["spec"]["containers"][0], "volumeMounts");
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[1]["mountPath"], MOUNT_PATH);
}

/// A regular container named `idaas-projector-wait` would share its name with the injected init
/// container, which the API server rejects with a "Duplicate value" that does not say why: the
/// webhook denies the pod with a message that does. Found by `output_is_valid`.
#[test]
fn regular_container_named_like_the_wait_container() {
    let case = hand_case(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "annotations": {
                "idaas-projector.io/m2m-token": "payments",
                "idaas-projector.io/role-arn": "acs:ram::0:role/-"}},
            "spec": {"containers": [{"name": "idaas-projector-wait", "image": "registry.example.com/a:0"}]}
        }),
        Sel::All,
    );
    match run(&case, &case.pod) {
        Err(denial) => {
            assert!(denial.0.contains(WAIT_CONTAINER), "{denial}");
            assert!(denial.0.contains(TOKEN_WAIT), "names the way out: {denial}");
        }
        Ok(other) => panic!("a duplicate container name must be denied: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written shapes of the opt-in levels.

/// A ServiceAccount named `payments-sa` with these annotations (the pods of the hand cases name
/// it).
fn service_account(annotations: &[(&str, &str)]) -> AccountLookup {
    AccountLookup::Found(AccountAnnotations {
        name: "payments-sa".to_owned(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

/// A hand case in a namespace labelled (or not) with this ServiceAccount, all of whose
/// annotations are valid unless `invalid_account_annotations` says otherwise.
fn scoped_case(mut pod: Value, namespace_enabled: bool, account: AccountLookup) -> Case {
    // The pod runs as that ServiceAccount unless it names one itself.
    if let (AccountLookup::Found(sa), Some(spec)) = (&account, pod["spec"].as_object_mut()) {
        spec.entry("serviceAccountName")
            .or_insert_with(|| json!(sa.name));
    }
    Case {
        namespace_enabled,
        account,
        ..hand_case(pod, Sel::All)
    }
}

/// Runs every property and checks that the pod is left alone.
fn skipped(case: &Case) {
    all_properties(case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    let answer = run(case, &case.pod);
    assert!(matches!(answer, Ok(Mutation::Skipped)), "{answer:?}");
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    env_entry(container, name)[0]["value"].as_str().unwrap()
}

#[test]
fn pod_opted_in_only_by_its_service_account() {
    let account = service_account(&[
        (M2M_TOKEN, "payments"),
        (ROLE_ARN, "acs:ram::1234567890123456:role/from-sa"),
        (STS_REGION, "cn-hangzhou"),
        (TOKEN_WAIT, "false"),
        (ROLE_SESSION_NAME, "ignored"),
    ]);
    let case = scoped_case(
        json!({
            "metadata": {"name": "web", "labels": {LEGACY_INJECT_LABEL: "true"},
                         "annotations": {"example.com/team": "payments"}},
            "spec": {"serviceAccountName": "payments-sa",
                     "containers": [{"name": "app", "image": "app:1"}]}
        }),
        true,
        account,
    );
    let (out, _, warnings) = injected(&case);
    let app = &out["spec"]["containers"][0];
    assert_eq!(
        env_value(app, ENV_ROLE_ARN),
        "acs:ram::1234567890123456:role/from-sa"
    );
    assert_eq!(env_value(app, ENV_STS_REGION), "cn-hangzhou");
    assert_eq!(env_value(app, ENV_ROLE_SESSION_NAME), "shop.web");
    assert_eq!(out["spec"]["volumes"], json!([the_volume("payments")]));
    assert!(
        out["spec"].get("initContainers").is_none(),
        "token-wait: false"
    );
    // The legacy label routed nothing here (the namespace did): no deprecation warning.
    assert_eq!(
        warnings,
        [format!(
            "annotation {ROLE_SESSION_NAME} on ServiceAccount \"payments-sa\" has no effect: it is read from pods only"
        )]
    );
}

/// The most common shape of opting in by the ServiceAccount: a pod with no annotations at all.
/// The patch must create `metadata.annotations` for the `injected` annotation.
#[test]
fn pod_without_annotations_opted_in_by_its_service_account() {
    let account = service_account(&[
        (M2M_TOKEN, "payments"),
        (ROLE_ARN, "acs:ram::1234567890123456:role/from-sa"),
    ]);
    for metadata in [
        json!({"name": "web"}),
        json!({"name": "web", "annotations": null}),
    ] {
        let case = scoped_case(
            json!({"metadata": metadata, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}),
            true,
            account.clone(),
        );
        let (out, _, _) = injected(&case);
        assert_eq!(ann_str(&out, INJECTED).map(str::len), Some(16), "{out}");
    }
}

#[test]
fn pod_role_name_beats_the_service_account_role_arn() {
    let account = service_account(&[
        (ROLE_ARN, "acs:ram::2:role/sa-role"),
        (OIDC_PROVIDER_ARN, "acs:ram::42:oidc-provider/sa-idp"),
    ]);
    let case = scoped_case(
        json!({
            "metadata": {"name": "web", "annotations": {M2M_TOKEN: "payments", ROLE_NAME: " reader "}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }),
        true,
        account,
    );
    let (out, _, _) = injected(&case);
    let app = &out["spec"]["containers"][0];
    // The role is the pod's, in the account of the OIDC provider the ServiceAccount names.
    assert_eq!(env_value(app, ENV_ROLE_ARN), "acs:ram::42:role/reader");
    assert_eq!(
        env_value(app, ENV_OIDC_PROVIDER_ARN),
        "acs:ram::42:oidc-provider/sa-idp"
    );
}

#[test]
fn role_arn_and_role_name_on_one_level_are_denied() {
    let both = [(ROLE_ARN, "acs:ram::2:role/sa-role"), (ROLE_NAME, "reader")];
    // On the ServiceAccount, even when the pod names its own role.
    let case = scoped_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({}))},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }),
        true,
        service_account(&both),
    );
    let case = Case {
        invalid_account_annotations: vec![ROLE_ARN, ROLE_NAME],
        ..case
    };
    all_properties(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    let denial = run(&case, &case.pod).unwrap_err().0;
    assert!(denial.contains(ROLE_NAME) && denial.contains(" on ServiceAccount \"payments-sa\""));
    // On the pod.
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({ROLE_NAME: "reader"}))},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }),
        Sel::All,
    );
    let case = Case {
        invalid_annotations: vec![ROLE_ARN, ROLE_NAME],
        ..case
    };
    all_properties(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    let denial = run(&case, &case.pod).unwrap_err().0;
    assert!(
        denial.contains(ROLE_ARN) && denial.contains(ROLE_NAME),
        "{denial}"
    );
}

/// `injection: disabled` wins over the pod's own opt-in (invalid values are not even read) and
/// over an unavailable ServiceAccount.
#[test]
fn opt_out_label_beats_a_pod_annotation() {
    let pod = json!({
        "metadata": {"name": "web", "labels": {INJECTION_LABEL: "disabled"},
                     "annotations": opted_in(json!({TOKEN_WAIT: "forever"}))},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let case = Case {
        invalid_annotations: vec![TOKEN_WAIT],
        ..scoped_case(pod.clone(), false, AccountLookup::Absent)
    };
    skipped(&case);
    let case = Case {
        invalid_annotations: vec![TOKEN_WAIT],
        ..scoped_case(
            pod,
            true,
            AccountLookup::Unavailable("ServiceAccount \"default\" cannot be read".to_owned()),
        )
    };
    skipped(&case);
}

/// Outside a labelled namespace the ServiceAccount counts for nothing: it does not opt the pod
/// in, its settings (valid or not) are not read, and an unavailable one denies nothing.
#[test]
fn service_account_annotations_ignored_outside_a_labelled_namespace() {
    let account = service_account(&[
        (M2M_TOKEN, "payments"),
        (ROLE_ARN, "acs:ram::2:role/sa-role"),
        (ROLE_NAME, "reader"),
        (STS_REGION, "nowhere"),
    ]);
    let bare = json!({
        "metadata": {"name": "web", "annotations": {"example.com/team": "payments"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    skipped(&scoped_case(bare, false, account.clone()));

    let no_role = json!({
        "metadata": {"name": "web", "annotations": {M2M_TOKEN: "payments"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let case = Case {
        invalid_account_annotations: vec![ROLE_ARN, ROLE_NAME, STS_REGION],
        ..scoped_case(no_role, false, account)
    };
    all_properties(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    let denial = run(&case, &case.pod).unwrap_err().0;
    assert!(denial.contains(ROLE_ARN), "{denial}");
    assert!(!denial.contains("payments-sa"), "{denial}");

    let pod = json!({
        "metadata": {"name": "web", "annotations": opted_in(json!({}))},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let unavailable =
        AccountLookup::Unavailable("ServiceAccount \"default\" cannot be read".into());
    let (out, _, warnings) = injected(&scoped_case(pod, false, unavailable));
    assert_eq!(
        env_value(&out["spec"]["containers"][0], ENV_ROLE_ARN),
        "acs:ram::1234567890123456:role/payments"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// Windows by a required node affinity: the Windows token path, no wait container.
#[test]
fn windows_by_node_affinity_gets_the_windows_token_path() {
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [
        {"matchExpressions": [{"key": "beta.kubernetes.io/os", "operator": "In", "values": ["windows"]}]},
        {"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]},
        ]},
    ]}}});
    let case = hand_case(
        json!({
            "metadata": {"name": "web", "annotations": opted_in(json!({}))},
            "spec": {"affinity": affinity, "containers": [{"name": "app", "image": "app:1"}]}
        }),
        Sel::All,
    );
    let (out, _, _) = injected(&case);
    let app = &out["spec"]["containers"][0];
    assert_eq!(env_value(app, ENV_OIDC_TOKEN_FILE), WINDOWS_TOKEN_FILE);
    assert_eq!(app["volumeMounts"][0]["mountPath"], WINDOWS_MOUNT_PATH);
    assert!(out["spec"].get("initContainers").is_none());
}

//! The pure heart of the webhook: from a pod's raw JSON and a configuration to a minimal RFC 6902
//! JSON Patch, or a denial.
//!
//! The pod is never deserialized into typed structs: the patch is computed on the raw JSON, so
//! fields this build does not know survive untouched. `mutate` is idempotent: applying its patch
//! and calling it again yields an empty patch (what `reinvocationPolicy: IfNeeded` relies on).

use std::time::Duration;

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use super::annotations::{self, Annotations, PodOnly, Role, Selection, Settings, TokenWait};

/// Name of the injected volume.
pub const VOLUME_NAME: &str = "idaas-projector-token";
/// Where the token volume is mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/idaas-projector.io";
/// The token file the SDKs read.
pub const TOKEN_FILE: &str = "/var/run/secrets/idaas-projector.io/token";
/// Where the token volume is mounted in a Windows pod.
pub const WINDOWS_MOUNT_PATH: &str = r"C:\var\run\secrets\idaas-projector.io";
/// The token file in a Windows pod.
pub const WINDOWS_TOKEN_FILE: &str = r"C:\var\run\secrets\idaas-projector.io\token";
/// Node labels that name a node's operating system.
pub const OS_LABELS: [&str; 2] = ["kubernetes.io/os", "beta.kubernetes.io/os"];
/// Key of the token in the Secret, and file name in the volume.
pub const TOKEN_KEY: &str = "token";
/// Name of the injected init container.
pub const INIT_CONTAINER_NAME: &str = "idaas-projector-wait";
/// UID and GID the init container runs as.
pub const INIT_CONTAINER_UID: i64 = 65532;
/// Default `token-wait`.
pub const DEFAULT_TOKEN_WAIT: Duration = Duration::from_secs(300);

/// Environment variables the Alibaba Cloud credentials SDKs read.
pub mod env {
    pub const ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
    pub const OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
    pub const OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
    pub const ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
    pub const STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
    pub const VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
}

/// Server-wide settings of the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutateConfig {
    /// Image of the `idaas-projector-wait` init container.
    pub init_image: String,
    /// OIDC provider ARN for pods whose annotation and M2MToken name none.
    pub default_oidc_provider_arn: Option<String>,
    /// `ALIBABA_CLOUD_STS_REGION` for pods that do not set `sts-region`.
    pub default_sts_region: Option<String>,
    /// `token-wait` for pods that do not set it.
    pub default_token_wait: Duration,
}

impl Default for MutateConfig {
    fn default() -> Self {
        Self {
            init_image: concat!("idaas-projector:", env!("CARGO_PKG_VERSION")).to_owned(),
            default_oidc_provider_arn: None,
            default_sts_region: None,
            default_token_wait: DEFAULT_TOKEN_WAIT,
        }
    }
}

/// What an M2MToken contributes to a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenDefaults {
    /// The Secret holding the token.
    pub secret_name: String,
    /// `spec.roleArn`.
    pub role_arn: Option<String>,
    /// `spec.oidcProviderArn`.
    pub oidc_provider_arn: Option<String>,
}

/// A ServiceAccount as the webhook keeps it: its name and its `idaas-projector.io/*`
/// annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountAnnotations {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

/// The result of looking up a pod's ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountLookup {
    /// Found.
    Found(AccountAnnotations),
    /// Not looked up (the namespace is not labelled, or `--standalone`), or no such
    /// ServiceAccount: it contributes nothing.
    Absent,
    /// Not known for now (the cache has not synced, or the API server could not be asked): the
    /// pod is refused with this message, and its controller retries.
    Unavailable(String),
}

/// What the webhook knows about a pod besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The admission request's namespace (pods being created often lack `metadata.namespace`).
    pub namespace: Option<&'a str>,
    /// The namespace is labelled `idaas-projector.io/injection: enabled`: the pod's
    /// ServiceAccount may opt it in and carry its settings.
    pub namespace_enabled: bool,
    /// The pod's ServiceAccount (looked up only when `namespace_enabled`).
    pub service_account: &'a AccountLookup,
}

impl<'a> Scope<'a> {
    /// A namespace that is not labelled: the pod's own annotations decide.
    pub fn pod_only(namespace: Option<&'a str>) -> Self {
        Self {
            namespace,
            namespace_enabled: false,
            service_account: &AccountLookup::Absent,
        }
    }
}

/// The result of looking up the M2MToken a pod names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    /// Found in the cache.
    Found(TokenDefaults),
    /// The cache is synced and has no such M2MToken.
    NotFound,
    /// No Kubernetes API (`--standalone`): annotations and flags only.
    Standalone,
    /// The cache has not synced yet: the answer is unknown, so the pod is refused for now (its
    /// controller retries).
    Unavailable,
}

/// A successful admission decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// The pod does not opt in: allow it unchanged.
    Skipped,
    /// The pod opts in. The patch is empty when everything is already in place.
    Injected { patch: Patch, warnings: Vec<String> },
}

/// Why a pod is refused; the message goes back to the user verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denial {}

/// The values injected into a pod, once every default is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub secret_name: String,
    pub role_arn: String,
    pub oidc_provider_arn: String,
    pub role_session_name: String,
    pub sts_region: Option<String>,
    pub sts_vpc_endpoint: bool,
    /// `None`: no init container.
    pub token_wait: Option<Duration>,
    pub init_image: String,
    pub windows: bool,
}

impl Injection {
    /// Where the token volume is mounted: the Windows form in a Windows pod.
    pub fn mount_path(&self) -> &'static str {
        if self.windows {
            WINDOWS_MOUNT_PATH
        } else {
            MOUNT_PATH
        }
    }

    /// The token file the SDK reads: the Windows form in a Windows pod.
    pub fn token_file(&self) -> &'static str {
        if self.windows {
            WINDOWS_TOKEN_FILE
        } else {
            TOKEN_FILE
        }
    }

    /// The token volume's mount.
    pub fn mount(&self) -> Value {
        json!({"name": VOLUME_NAME, "mountPath": self.mount_path(), "readOnly": true})
    }

    /// The environment variables, in the order they are appended.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.env_refs().map(|(k, v)| (k, v.to_owned())).collect()
    }

    /// [`Self::env`] without copying the values.
    fn env_refs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (env::ROLE_ARN, self.role_arn.as_str()),
            (env::OIDC_PROVIDER_ARN, self.oidc_provider_arn.as_str()),
            (env::OIDC_TOKEN_FILE, self.token_file()),
            (env::ROLE_SESSION_NAME, self.role_session_name.as_str()),
        ]
        .into_iter()
        .chain(self.sts_region.as_deref().map(|r| (env::STS_REGION, r)))
        .chain(
            self.sts_vpc_endpoint
                .then_some((env::VPC_ENDPOINT_ENABLED, "true")),
        )
    }

    /// A short hash of everything injected: the value of `idaas-projector.io/injected`.
    ///
    /// It only has to recognise the webhook's own earlier work, not resist forgery (anyone who
    /// can create the pod can write the annotation), so a fast 64-bit FNV-1a over the resolved
    /// values does.
    pub fn hash(&self) -> String {
        let mut h = Fnv1a::default();
        for (k, v) in self.env_refs() {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
        h.field(self.secret_name.as_bytes());
        if let Some(wait) = self.init_container_wait() {
            h.field(&wait.as_secs().to_le_bytes());
            h.field(self.init_image.as_bytes());
        }
        format!("{:016x}", h.0)
    }

    /// The projected volume.
    pub fn volume(&self) -> Value {
        json!({
            "name": VOLUME_NAME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [{
                    "secret": {
                        "name": self.secret_name,
                        "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                        "optional": true,
                    }
                }]
            }
        })
    }

    /// The init container's wait, when the pod gets one (never on Windows).
    fn init_container_wait(&self) -> Option<Duration> {
        self.token_wait.filter(|_| !self.windows)
    }

    /// Whether the pod gets the `idaas-projector-wait` init container.
    pub fn has_init_container(&self) -> bool {
        self.init_container_wait().is_some()
    }

    /// The `idaas-projector-wait` init container, if one is wanted.
    pub fn init_container(&self) -> Option<Value> {
        let wait = self.init_container_wait()?;
        Some(json!({
            "name": INIT_CONTAINER_NAME,
            "image": self.init_image,
            "imagePullPolicy": "IfNotPresent",
            "args": [
                "wait-for-token",
                "--file", TOKEN_FILE,
                "--timeout", crate::time::format_duration(wait).replace(' ', ""),
            ],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"memory": "32Mi"},
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": INIT_CONTAINER_UID,
                "runAsGroup": INIT_CONTAINER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [self.mount()],
        }))
    }
}

/// 64-bit FNV-1a; each field is followed by a 0xff separator (never in UTF-8) so that field
/// boundaries count.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn field(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(std::iter::once(&0xffu8)) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A JSON Pointer from its tokens, escaped per RFC 6901.
fn ptr(tokens: &[&str]) -> PointerBuf {
    let mut path = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum::<usize>() + 4);
    for token in tokens {
        path.push('/');
        for c in token.chars() {
            match c {
                '~' => path.push_str("~0"),
                '/' => path.push_str("~1"),
                c => path.push(c),
            }
        }
    }
    // Escaped as above, the path is always a valid pointer; the fallback only guards that.
    PointerBuf::parse(path).unwrap_or_else(|_| PointerBuf::from_tokens(tokens.iter().copied()))
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// The role session name derived from the namespace and the pod's name (or `generateName`),
/// cleaned to RAM's alphabet and cut to 64 characters.
pub fn derive_session_name(namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name
        .map(|n| n.trim_end_matches('-'))
        .filter(|n| !n.is_empty());
    let raw = match (namespace.filter(|n| !n.is_empty()), name) {
        (Some(ns), Some(name)) => format!("{ns}.{name}"),
        (Some(ns), None) => format!("{ns}.pod"),
        (None, Some(name)) => name.to_owned(),
        (None, None) => "idaas-projector".to_owned(),
    };
    let mut cleaned: String = raw
        .chars()
        .map(|c| {
            if crate::ram::names::is_session_name_char(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.len() < 2 {
        cleaned = format!("idaas-projector.{cleaned}");
    }
    cleaned
}

/// Whether the pod runs on Windows nodes: `spec.os.name`, a nodeSelector on either OS label,
/// or a required node affinity that admits only `windows`.
pub fn is_windows(spec: &Map<String, Value>) -> bool {
    let os = spec
        .get("os")
        .and_then(|os| os.get("name"))
        .and_then(Value::as_str);
    let selector = spec.get("nodeSelector");
    if os.is_some_and(|os| os != "windows") {
        // An explicit `spec.os.name` (Kubernetes checks the pod's fields against it) decides.
        return false;
    }
    os == Some("windows")
        || OS_LABELS.iter().any(|label| {
            selector.and_then(|s| s.get(*label)).and_then(Value::as_str) == Some("windows")
        })
        || affinity_admits_only_windows(spec)
}

/// Every term of the required node affinity (terms are ORed) has an `In` expression on an OS
/// label whose values are all `windows`.
fn affinity_admits_only_windows(spec: &Map<String, Value>) -> bool {
    let terms = spec
        .get("affinity")
        .and_then(|a| {
            a.pointer(
                "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
            )
        })
        .and_then(Value::as_array);
    let windows_only = |e: &Value| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values = e.get("values").and_then(Value::as_array);
        OS_LABELS.contains(&key)
            && e.get("operator").and_then(Value::as_str) == Some("In")
            && values.is_some_and(|v| !v.is_empty() && v.iter().all(|v| v == "windows"))
    };
    terms.is_some_and(|terms| {
        !terms.is_empty()
            && terms.iter().all(|term| {
                term.get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_some_and(|exprs| exprs.iter().any(windows_only))
            })
    })
}

struct ContainerRef<'a> {
    list: &'static str,
    index: usize,
    name: &'a str,
    value: &'a Map<String, Value>,
}

fn containers<'a>(
    spec: &'a Map<String, Value>,
    list: &'static str,
) -> Result<Vec<ContainerRef<'a>>, Denial> {
    let items = match spec.get(list) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(items) => items,
    };
    let items = items
        .as_array()
        .ok_or_else(|| Denial(format!("spec.{list} is not a list")))?;
    items
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let value = c
                .as_object()
                .ok_or_else(|| Denial(format!("spec.{list}[{index}] is not an object")))?;
            let name = value.get("name").and_then(Value::as_str).unwrap_or("");
            Ok(ContainerRef {
                list,
                index,
                name,
                value,
            })
        })
        .collect()
}

fn named<'a>(list: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    list?
        .as_array()?
        .iter()
        .find(|item| item.get("name").and_then(Value::as_str) == Some(name))
}

/// Whether a mount path is the webhook's. On Windows, paths are compared as the kubelet maps
/// them: either slash, any case, with or without the `C:` drive.
fn same_path(path: &str, ours: &str, windows: bool) -> bool {
    if !windows {
        return path.trim_end_matches('/') == ours.trim_end_matches('/');
    }
    let normal = |p: &str| {
        let p = p.replace('/', "\\").to_ascii_lowercase();
        let p = p.strip_prefix("c:").map(str::to_owned).unwrap_or(p);
        p.trim_end_matches('\\').to_owned()
    };
    normal(path) == normal(ours)
}

/// What a pod asks for, read from its annotations and (in a labelled namespace) its
/// ServiceAccount's.
struct Wanted<'a> {
    m2m_token: String,
    /// The pod's settings, then the ServiceAccount's: the first that sets a value wins.
    levels: [Settings; 2],
    pod_only: PodOnly,
    /// The ServiceAccount's annotations, when the namespace is labelled and it was found.
    account: Option<Annotations<'a>>,
}

impl Wanted<'_> {
    /// The first level's value of one setting.
    fn first<T>(&self, f: impl Fn(&Settings) -> Option<T>) -> Option<T> {
        self.levels.iter().find_map(f)
    }
}

/// What the webhook resolved for a pod that opts in, before any patch is built.
struct Plan<'a> {
    meta: PodMeta<'a>,
    wanted: Wanted<'a>,
    spec: &'a Object,
    regular: Vec<ContainerRef<'a>>,
    init: Vec<ContainerRef<'a>>,
    injection: Injection,
    /// Some container (regular or the user's init containers) reads the token.
    any_selected: bool,
    /// The pod asked for an init container (before Windows or the selection removed it).
    requested_wait: bool,
    /// The M2MToken was looked up and is not there.
    not_found: bool,
}

impl<'a> Plan<'a> {
    /// The user's own init containers (not the injected one).
    fn user_init(&self) -> impl Iterator<Item = &ContainerRef<'a>> {
        self.init.iter().filter(|c| c.name != INIT_CONTAINER_NAME)
    }
}

/// The opt-in rule and every setting resolved: `Ok(None)` when the pod is not injected (opted
/// out, or not opted in).
fn plan<'a>(
    pod: &'a Value,
    scope: &Scope<'a>,
    config: &MutateConfig,
    lookup: impl FnOnce(&str) -> TokenLookup,
) -> Result<Option<Plan<'a>>, Denial> {
    let meta = pod_metadata(pod)?;
    if opted_out(meta.labels) {
        return Ok(None);
    }
    let Some(wanted) = wanted(meta.annotations, scope)? else {
        return Ok(None);
    };
    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| Denial("the Pod has no spec object".to_owned()))?;
    let regular = containers(spec, "containers")?;
    let init: Vec<ContainerRef<'_>> = containers(spec, "initContainers")?;
    let user_init = || init.iter().filter(|c| c.name != INIT_CONTAINER_NAME);
    let selection = &wanted.pod_only.selection;
    check_selection(selection, regular.iter().chain(user_init()))?;

    let lookup = lookup(&wanted.m2m_token);
    let not_found = matches!(lookup, TokenLookup::NotFound);
    let (defaults, found) = token_defaults(&wanted.m2m_token, lookup)?;
    let mut injection = resolve(&wanted, defaults, found, scope, meta.metadata, spec, config)?;
    let requested_wait = injection.token_wait.is_some();
    let any_selected = regular
        .iter()
        .chain(user_init())
        .any(|c| selection.selects(c.name));
    if !any_selected {
        // No container reads the token: holding the pod for it would only delay it.
        injection.token_wait = None;
    }
    Ok(Some(Plan {
        meta,
        wanted,
        spec,
        regular,
        init,
        injection,
        any_selected,
        requested_wait,
        not_found,
    }))
}

/// Decides what to do with one pod.
///
/// `scope` holds the request's namespace and, in a labelled namespace, the pod's
/// ServiceAccount; `lookup` resolves the M2MToken the pod names.
pub fn mutate(
    pod: &Value,
    scope: &Scope<'_>,
    config: &MutateConfig,
    lookup: impl FnOnce(&str) -> TokenLookup,
) -> Result<Mutation, Denial> {
    let Some(plan) = plan(pod, scope, config, lookup)? else {
        return Ok(Mutation::Skipped);
    };
    let injection = &plan.injection;
    let mut warnings = warnings(
        &plan.wanted,
        injection,
        plan.any_selected,
        plan.not_found,
        plan.requested_wait,
    );
    warnings.extend(label_warnings(plan.meta.labels, scope));
    let already_injected = plan
        .meta
        .annotations
        .is_some_and(|a| a.contains_key(annotations::INJECTED));
    check_container_names(already_injected, &plan.regular, &plan.init, injection)?;

    let mut ops = Vec::with_capacity(8 + 2 * plan.regular.len() + 2 * plan.init.len());
    ops.extend(injected_annotation_op(&plan.meta, injection.hash()));
    ops.extend(volume_op(plan.spec, already_injected, injection)?);
    // Mounts and environment of every selected container.
    let vars = injection.env();
    let selection = &plan.wanted.pod_only.selection;
    for c in plan.regular.iter().chain(plan.user_init()) {
        if selection.selects(c.name) {
            container_ops(c, injection, &vars, &mut ops, &mut warnings)?;
        }
    }
    // The init container goes first; inserting at index 0 shifts the others, so it comes last.
    if let Some(init_container) = injection.init_container()
        && !plan.init.iter().any(|c| c.name == INIT_CONTAINER_NAME)
    {
        ops.push(match plan.spec.get("initContainers") {
            Some(Value::Array(_)) => add(ptr(&["spec", "initContainers", "0"]), init_container),
            _ => add(ptr(&["spec", "initContainers"]), json!([init_container])),
        });
    }
    Ok(Mutation::Injected {
        patch: Patch(ops),
        warnings,
    })
}

type Object = Map<String, Value>;

/// The parts of a pod's metadata the decision reads, each absent or an object.
struct PodMeta<'a> {
    metadata: Option<&'a Object>,
    annotations: Option<&'a Object>,
    labels: Option<&'a Object>,
}

fn pod_metadata(pod: &Value) -> Result<PodMeta<'_>, Denial> {
    let pod = pod
        .as_object()
        .ok_or_else(|| Denial("the object is not a Pod: expected a JSON object".to_owned()))?;
    let metadata = match pod.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Denial("metadata is not an object".to_owned())),
    };
    let field = |key: &str| match metadata.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(a)) => Ok(Some(a)),
        Some(_) => Err(Denial(format!("metadata.{key} is not an object"))),
    };
    Ok(PodMeta {
        metadata,
        annotations: field("annotations")?,
        labels: field("labels")?,
    })
}

/// A pod labelled `idaas-projector.io/injection: disabled` is never injected.
pub fn opted_out(labels: Option<&Map<String, Value>>) -> bool {
    labels
        .and_then(|l| l.get(annotations::INJECTION_LABEL))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim() == annotations::DISABLED)
}

/// The pod's ServiceAccount: `spec.serviceAccountName`, the deprecated `spec.serviceAccount`,
/// or `default` (what the API server's ServiceAccount admission sets).
pub fn service_account_name(pod: &Value) -> &str {
    let spec = pod.get("spec");
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|key| {
            spec.and_then(|s| s.get(*key))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or("default")
}

/// Whether the decision needs the pod's ServiceAccount: in a labelled namespace, unless the
/// pod opts out (or is not an object, which is refused anyway).
pub fn needs_service_account(pod: &Value, namespace_enabled: bool) -> bool {
    namespace_enabled && pod_metadata(pod).is_ok_and(|meta| !opted_out(meta.labels))
}

/// The opt-in rule: the pod's `m2m-token` annotation, else (in a labelled namespace) its
/// ServiceAccount's. `Ok(None)`: the pod does not opt in. Settings are checked only once the
/// pod opts in.
fn wanted<'a>(
    pod_annotations: Option<&'a Object>,
    scope: &Scope<'a>,
) -> Result<Option<Wanted<'a>>, Denial> {
    let pod = Annotations::Pod(pod_annotations);
    let pod_token = annotations::m2m_token(&pod).map_err(Denial)?;
    let account = match scope.service_account {
        _ if !scope.namespace_enabled => None,
        AccountLookup::Found(sa) => Some(Annotations::ServiceAccount(&sa.name, &sa.annotations)),
        AccountLookup::Absent => None,
        AccountLookup::Unavailable(why) => return Err(Denial(why.clone())),
    };
    let m2m_token = match (pod_token, &account) {
        (Some(token), _) => token,
        (None, Some(account)) => match annotations::m2m_token(account).map_err(Denial)? {
            Some(token) => token,
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    // The pod's own problems are reported first.
    let pod_settings = annotations::settings(&pod).map_err(Denial)?;
    let pod_only = annotations::pod_only(pod_annotations).map_err(Denial)?;
    let account_settings = match &account {
        Some(a) => annotations::settings(a).map_err(Denial)?,
        None => Settings::default(),
    };
    Ok(Some(Wanted {
        m2m_token,
        levels: [pod_settings, account_settings],
        pod_only,
        account,
    }))
}

/// The M2MToken's defaults and whether it was found; the Secret is named after the M2MToken
/// when it was not (or in standalone mode).
fn token_defaults(m2m_token: &str, lookup: TokenLookup) -> Result<(TokenDefaults, bool), Denial> {
    match lookup {
        TokenLookup::Found(defaults) => Ok((defaults, true)),
        TokenLookup::NotFound | TokenLookup::Standalone => Ok((
            TokenDefaults {
                secret_name: m2m_token.to_owned(),
                ..TokenDefaults::default()
            },
            false,
        )),
        TokenLookup::Unavailable => Err(Denial(format!(
            "the webhook has not loaded the cluster's M2MTokens yet, so M2MToken {m2m_token:?} cannot be resolved; retry in a few seconds"
        ))),
    }
}

/// What the admission answer warns about, before any container's own warnings.
fn warnings(
    wanted: &Wanted<'_>,
    injection: &Injection,
    any_selected: bool,
    not_found: bool,
    requested_wait: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if !any_selected {
        warnings.push(
            "no container is selected by the skip/only annotations: only the volume is injected"
                .to_owned(),
        );
    }
    if not_found {
        warnings.push(format!(
            "M2MToken {:?} not found in this namespace: the pod mounts Secret {:?} and {} until it exists",
            wanted.m2m_token,
            injection.secret_name,
            if injection.has_init_container() {
                "waits"
            } else {
                "has no token"
            }
        ));
    }
    if injection.windows && requested_wait {
        warnings.push(
            "Windows pod: no idaas-projector-wait init container; the application must retry until the token file exists"
                .to_owned(),
        );
    }
    if let Some(account) = &wanted.account {
        warnings.extend(role_for_another_token(wanted, account));
        for key in annotations::POD_ONLY {
            if account.get(key).ok().flatten().is_some() {
                warnings.push(format!(
                    "annotation {key}{} has no effect: it is read from pods only",
                    account.on()
                ));
            }
        }
    }
    warnings
}

/// A pod that names another M2MToken than its ServiceAccount does, and takes its role from the
/// ServiceAccount: the role was likely meant for the ServiceAccount's M2MToken (and RAM checks
/// the token's audience against the role's trust policy).
fn role_for_another_token(wanted: &Wanted<'_>, account: &Annotations<'_>) -> Option<String> {
    let Annotations::ServiceAccount(name, _) = account else {
        return None;
    };
    let theirs = account.get(annotations::M2M_TOKEN).ok().flatten()?.trim();
    let [pod, from_account] = &wanted.levels;
    (theirs != wanted.m2m_token && pod.role.is_none() && from_account.role.is_some()).then(|| {
        format!(
            "the pod names M2MToken {:?} while its ServiceAccount {name:?} names {theirs:?}, and the role comes from the \
             ServiceAccount: make sure that role trusts M2MToken {:?}'s audience, or set {} or {} on the pod",
            wanted.m2m_token,
            wanted.m2m_token,
            annotations::ROLE_ARN,
            annotations::ROLE_NAME
        )
    })
}

/// Warnings about the pod's labels: the object-selector mode's deprecated routing label (where
/// it did the routing), and an `injection` label that is neither `enabled` nor `disabled`.
fn label_warnings(labels: Option<&Map<String, Value>>, scope: &Scope<'_>) -> Vec<String> {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let mut warnings = Vec::new();
    if !scope.namespace_enabled && label(annotations::LEGACY_INJECT_LABEL) == Some("true") {
        warnings.push(format!(
            "label {}, which routes pods in the object-selector mode, is deprecated and will stop working in the next release: \
             label the pod {}: {} instead",
            annotations::LEGACY_INJECT_LABEL,
            annotations::INJECTION_LABEL,
            annotations::ENABLED
        ));
    }
    if let Some(value) = label(annotations::INJECTION_LABEL)
        && value.trim() != annotations::ENABLED
    {
        warnings.push(format!(
            "label {}={value:?} means nothing to idaas-projector: {:?} opts a pod out, {:?} routes it; the pod is injected",
            annotations::INJECTION_LABEL,
            annotations::DISABLED,
            annotations::ENABLED
        ));
    }
    warnings
}

/// An init container with our name must be ours, and no regular container may have it when
/// the init container is injected (container names are unique across both lists).
fn check_container_names(
    already_injected: bool,
    regular: &[ContainerRef<'_>],
    init: &[ContainerRef<'_>],
    injection: &Injection,
) -> Result<(), Denial> {
    if !already_injected && init.iter().any(|c| c.name == INIT_CONTAINER_NAME) {
        return Err(Denial(format!(
            "the pod already has an init container named {INIT_CONTAINER_NAME:?} that idaas-projector did not inject; \
             rename it or remove the {} annotation",
            annotations::M2M_TOKEN
        )));
    }
    if injection.has_init_container() && regular.iter().any(|c| c.name == INIT_CONTAINER_NAME) {
        return Err(Denial(format!(
            "the pod has a container named {INIT_CONTAINER_NAME:?}, the name of the init container \
             idaas-projector injects; rename that container, set the {} annotation to \"false\" \
             to inject no init container, or remove the {} annotation",
            annotations::TOKEN_WAIT,
            annotations::M2M_TOKEN
        )));
    }
    Ok(())
}

/// The annotation that records what was injected, unless it already says so. A pod opted in
/// by its ServiceAccount may have no annotations (or no metadata) to add it to.
fn injected_annotation_op(meta: &PodMeta<'_>, hash: String) -> Option<PatchOperation> {
    let path = ptr(&["metadata", "annotations", annotations::INJECTED]);
    let Some(pod_annotations) = meta.annotations else {
        let annotations = json!({annotations::INJECTED: hash});
        return Some(match meta.metadata {
            Some(_) => add(ptr(&["metadata", "annotations"]), annotations),
            None => add(ptr(&["metadata"]), json!({"annotations": annotations})),
        });
    };
    match pod_annotations.get(annotations::INJECTED) {
        Some(Value::String(h)) if *h == hash => None,
        Some(_) => Some(PatchOperation::Replace(ReplaceOperation {
            path,
            value: Value::String(hash),
        })),
        None => Some(add(path, Value::String(hash))),
    }
}

/// The token volume, unless the pod has it from an earlier injection; a volume of that name
/// that is not ours is a denial.
fn volume_op(
    spec: &Map<String, Value>,
    already_injected: bool,
    injection: &Injection,
) -> Result<Option<PatchOperation>, Denial> {
    match named(spec.get("volumes"), VOLUME_NAME) {
        Some(existing) => {
            let ours = already_injected && existing.get("projected").is_some();
            if ours {
                Ok(None)
            } else {
                Err(Denial(format!(
                    "the pod already has a volume named {VOLUME_NAME:?} that idaas-projector did not inject; \
                     rename that volume or remove the {} annotation",
                    annotations::M2M_TOKEN
                )))
            }
        }
        None => Ok(Some(match spec.get("volumes") {
            Some(Value::Array(_)) => add(ptr(&["spec", "volumes", "-"]), injection.volume()),
            _ => add(ptr(&["spec", "volumes"]), json!([injection.volume()])),
        })),
    }
}

fn check_selection<'a>(
    selection: &Selection,
    all: impl Iterator<Item = &'a ContainerRef<'a>>,
) -> Result<(), Denial> {
    let (annotation, names) = match selection {
        Selection::All => return Ok(()),
        Selection::Skip(names) => (annotations::SKIP_CONTAINERS, names),
        Selection::Only(names) => (annotations::ONLY_CONTAINERS, names),
    };
    let present: Vec<&str> = all.map(|c| c.name).collect();
    for name in names {
        if !present.contains(&name.as_str()) {
            return Err(Denial(format!(
                "annotation {annotation} names container {name:?}, which the pod does not have (it has: {})",
                present.join(", ")
            )));
        }
    }
    Ok(())
}

fn resolve(
    wanted: &Wanted<'_>,
    defaults: TokenDefaults,
    found: bool,
    scope: &Scope<'_>,
    metadata: Option<&Map<String, Value>>,
    spec: &Map<String, Value>,
    config: &MutateConfig,
) -> Result<Injection, Denial> {
    let oidc_provider_arn = wanted
        .first(|s| s.oidc_provider_arn.clone())
        .or(defaults.oidc_provider_arn)
        .or_else(|| config.default_oidc_provider_arn.clone())
        .ok_or_else(|| {
            Denial(format!(
                "no OIDC provider ARN: set annotation {} (acs:ram::<account id>:oidc-provider/<name>){}, \
                 spec.oidcProviderArn on the M2MToken, or the webhook's --default-oidc-provider-arn",
                annotations::OIDC_PROVIDER_ARN,
                levels_hint(wanted)
            ))
        })?;
    let role = wanted
        .first(|s| s.role.clone())
        .or(defaults.role_arn.map(Role::Arn))
        .ok_or_else(|| {
            let token = if found {
                format!(" or spec.roleArn on M2MToken {:?}", wanted.m2m_token)
            } else {
                String::new()
            };
            Denial(format!(
                "no RAM role to assume: set annotation {} (acs:ram::<account id>:role/<role name>) or {} (a role name){}{token}",
                annotations::ROLE_ARN,
                annotations::ROLE_NAME,
                levels_hint(wanted)
            ))
        })?;
    let role_arn = match role {
        Role::Arn(arn) => arn,
        Role::Name(name) => {
            let account = crate::ram::names::oidc_provider_account(&oidc_provider_arn).map_err(|why| {
                Denial(format!(
                    "annotation {} needs the account of the OIDC provider ARN, and {oidc_provider_arn:?} is not one ({why})",
                    annotations::ROLE_NAME
                ))
            })?;
            crate::ram::names::role_arn(account, &name)
        }
    };
    let token_wait = match wanted.first(|s| s.token_wait) {
        None | Some(TokenWait::Default) => Some(config.default_token_wait),
        Some(TokenWait::Off) => None,
        Some(TokenWait::For(wait)) => Some(wait),
    };
    Ok(Injection {
        secret_name: defaults.secret_name,
        role_arn,
        oidc_provider_arn,
        role_session_name: session_name(wanted, scope, metadata),
        sts_region: wanted
            .first(|s| s.sts_region.clone())
            .or_else(|| config.default_sts_region.clone()),
        sts_vpc_endpoint: wanted.first(|s| s.sts_vpc_endpoint).unwrap_or(false),
        token_wait,
        init_image: config.init_image.clone(),
        windows: is_windows(spec),
    })
}

/// Where a setting may go, for messages: the pod, or (in a labelled namespace) its
/// ServiceAccount, by name.
fn levels_hint(wanted: &Wanted<'_>) -> String {
    match &wanted.account {
        Some(Annotations::ServiceAccount(name, _)) => {
            format!(" on the pod or its ServiceAccount {name:?}")
        }
        _ => " on the pod".to_owned(),
    }
}

/// The `role-session-name` annotation, else one derived from the namespace and pod name.
fn session_name(
    wanted: &Wanted<'_>,
    scope: &Scope<'_>,
    metadata: Option<&Map<String, Value>>,
) -> String {
    let name_field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let namespace = scope
        .namespace
        .filter(|n| !n.is_empty())
        .or_else(|| name_field("namespace"));
    wanted
        .pod_only
        .role_session_name
        .clone()
        .unwrap_or_else(|| {
            derive_session_name(
                namespace,
                name_field("name").or_else(|| name_field("generateName")),
            )
        })
}

fn container_ops(
    c: &ContainerRef<'_>,
    injection: &Injection,
    vars: &[(&'static str, String)],
    ops: &mut Vec<PatchOperation>,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let index = c.index.to_string();
    let base = ["spec", c.list, index.as_str()];

    // Mount.
    let mounts = match c.value.get("volumeMounts") {
        None | Some(Value::Null) => None,
        Some(Value::Array(m)) => Some(m),
        Some(_) => {
            return Err(Denial(format!(
                "spec.{}[{}].volumeMounts is not a list",
                c.list, c.index
            )));
        }
    };
    let mut mounted = false;
    for m in mounts.into_iter().flatten() {
        let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
        let volume = m.get("name").and_then(Value::as_str).unwrap_or("");
        if same_path(path, injection.mount_path(), injection.windows) {
            if volume == VOLUME_NAME {
                mounted = true;
            } else {
                return Err(Denial(format!(
                    "container {:?} already mounts volume {volume:?} at {}, where idaas-projector mounts the token; \
                     move that mount or leave the container out with annotation {}",
                    c.name,
                    injection.mount_path(),
                    annotations::SKIP_CONTAINERS
                )));
            }
        }
    }
    if !mounted {
        ops.push(match mounts {
            Some(_) => add(
                ptr(&[base[0], base[1], base[2], "volumeMounts", "-"]),
                injection.mount(),
            ),
            None => add(
                ptr(&[base[0], base[1], base[2], "volumeMounts"]),
                json!([injection.mount()]),
            ),
        });
    }

    // Environment: a variable the user set stays as the user set it.
    let env = match c.value.get("env") {
        None | Some(Value::Null) => None,
        Some(Value::Array(e)) => Some(e),
        Some(_) => {
            return Err(Denial(format!(
                "spec.{}[{}].env is not a list",
                c.list, c.index
            )));
        }
    };
    let mut missing = Vec::new();
    for (name, value) in vars {
        match env.and_then(|e| {
            e.iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        }) {
            Some(existing) => {
                if existing.get("value").and_then(Value::as_str) != Some(value.as_str()) {
                    warnings.push(format!(
                        "container {:?} sets {name} itself; its value is kept",
                        c.name
                    ));
                }
            }
            None => missing.push(json!({"name": name, "value": value})),
        }
    }
    if env.is_none() {
        if !missing.is_empty() {
            ops.push(add(
                ptr(&[base[0], base[1], base[2], "env"]),
                Value::Array(missing),
            ));
        }
    } else {
        for var in missing {
            ops.push(add(ptr(&[base[0], base[1], base[2], "env", "-"]), var));
        }
    }
    Ok(())
}

/// Whether a running pod carries what the webhook would inject now: what the projector's sweep
/// and `doctor` conclude about a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PodState {
    /// Opted out, or not opted in: nothing to look at.
    NotOptedIn,
    /// Injected, and the webhook would inject the same now.
    Current,
    /// Opts in, but carries no `idaas-projector.io/injected` annotation: the webhook never
    /// injected it.
    NotInjected,
    /// Injected, but the webhook would now inject something else, or refuse the pod.
    Stale,
}

impl PodState {
    /// The label value of the `idaas_projector_pods` gauge, and the name `doctor` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotOptedIn => "not_opted_in",
            Self::Current => "injected",
            Self::NotInjected => "not_injected",
            Self::Stale => "stale",
        }
    }
}

/// A running pod's [`PodState`], with what the webhook would do with it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub state: PodState,
    /// The M2MToken the pod opts in to, when its annotations name one validly.
    pub m2m_token: Option<String>,
    /// What the webhook would inject now, unless it would refuse the pod.
    pub expected: Option<Injection>,
    /// Why the webhook would refuse the pod now.
    pub refusal: Option<String>,
}

/// Classifies a pod that exists (read from the API server) by the webhook's own rules: the
/// opt-in rule, then the hash of what [`mutate`] would inject now against the pod's
/// `idaas-projector.io/injected` annotation.
///
/// Two things the webhook saw differently when the pod was admitted are restored first: a pod
/// named from `generateName` had no name yet (its session name was derived from
/// `generateName`); and the init container's image may be an earlier release's, so the hash
/// made with the image the pod got also counts as current (a new image alone does not make a
/// pod stale: its init container has already run).
pub fn classify(
    mut pod: Value,
    scope: &Scope<'_>,
    config: &MutateConfig,
    lookup: impl Fn(&str) -> TokenLookup,
) -> Classified {
    as_admitted(&mut pod);
    let injected = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(annotations::INJECTED))
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The image of the init container the pod got, when it has one of ours.
    let pod_init_image = pod
        .pointer("/spec/initContainers")
        .and_then(|list| named(Some(list), INIT_CONTAINER_NAME))
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let not_opted_in = Classified {
        state: PodState::NotOptedIn,
        m2m_token: None,
        expected: None,
        refusal: None,
    };
    let meta = match pod_metadata(&pod) {
        Ok(meta) if opted_out(meta.labels) => return not_opted_in,
        Ok(meta) => meta,
        Err(_) => return not_opted_in,
    };
    let m2m_token = match wanted(meta.annotations, scope) {
        Ok(None) => return not_opted_in,
        Ok(Some(wanted)) => Some(wanted.m2m_token),
        Err(_) => None,
    };
    let (expected, refusal) = match plan(&pod, scope, config, &lookup) {
        // The checks made while building the patch can refuse it too.
        Ok(Some(plan)) => match mutate(&pod, scope, config, &lookup) {
            Ok(_) => (Some(plan.injection), None),
            Err(denial) => (None, Some(denial.0)),
        },
        Ok(None) => return not_opted_in,
        Err(denial) => (None, Some(denial.0)),
    };
    let same_as = |now: &Injection, hash: &str| {
        hash == now.hash()
            || pod_init_image.as_ref().is_some_and(|image| {
                let mut then = now.clone();
                then.init_image.clone_from(image);
                hash == then.hash()
            })
    };
    let state = match (&injected, &expected) {
        (None, _) => PodState::NotInjected,
        (Some(hash), Some(now)) if same_as(now, hash) => PodState::Current,
        (Some(_), _) => PodState::Stale,
    };
    Classified {
        state,
        m2m_token,
        expected,
        refusal,
    }
}

/// Puts back what the webhook saw at admission: no `metadata.name` when the API server
/// generated it from `generateName` after the webhook answered.
fn as_admitted(pod: &mut Value) {
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let generated = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(name), Some(prefix)) => !prefix.is_empty() && name.starts_with(prefix),
        _ => false,
    };
    if generated {
        meta.remove("name");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MutateConfig {
        MutateConfig {
            init_image: "registry.example/idaas-projector:test".into(),
            default_oidc_provider_arn: Some("acs:ram::1:oidc-provider/idaas".into()),
            ..MutateConfig::default()
        }
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": {
                "idaas-projector.io/m2m-token": "payments",
                "idaas-projector.io/role-arn": "acs:ram::1:role/payments"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]}
        })
    }

    fn apply(pod: &Value, m: &Mutation) -> Value {
        let mut out = pod.clone();
        if let Mutation::Injected { patch, .. } = m {
            json_patch::patch(&mut out, patch).expect("patch applies");
        }
        out
    }

    #[test]
    fn injects_and_is_idempotent() {
        let p = pod();
        let m = mutate(&p, &Scope::pod_only(Some("shop")), &cfg(), |_| {
            TokenLookup::Standalone
        })
        .unwrap();
        let out = apply(&p, &m);
        assert_eq!(
            out["spec"]["initContainers"][0]["name"],
            INIT_CONTAINER_NAME
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"][3]["value"], "shop.web",
            "{out:#}"
        );
        let again = mutate(&out, &Scope::pod_only(Some("shop")), &cfg(), |_| {
            TokenLookup::Standalone
        })
        .unwrap();
        assert_eq!(
            again,
            Mutation::Injected {
                patch: Patch(vec![]),
                warnings: vec![]
            }
        );
    }

    #[test]
    fn windows_mount_paths_compare_as_the_kubelet_maps_them() {
        for user in [
            WINDOWS_MOUNT_PATH,
            r"c:\var\run\secrets\idaas-projector.io\",
            "/var/run/secrets/idaas-projector.io",
            "C:/var/run/secrets/IDAAS-PROJECTOR.IO/",
        ] {
            assert!(same_path(user, WINDOWS_MOUNT_PATH, true), "{user}");
        }
        assert!(!same_path(r"C:\var\run\secrets", WINDOWS_MOUNT_PATH, true));
        assert!(same_path(
            "/var/run/secrets/idaas-projector.io/",
            MOUNT_PATH,
            false
        ));
        assert!(!same_path(
            "/VAR/run/secrets/idaas-projector.io",
            MOUNT_PATH,
            false
        ));
    }

    #[test]
    fn session_names() {
        assert_eq!(derive_session_name(Some("ns"), Some("web-")), "ns.web");
        assert_eq!(derive_session_name(None, Some("a")), "idaas-projector.a");
        assert_eq!(derive_session_name(Some("n"), Some("a:b/c")), "n.a-b-c");
        assert_eq!(
            derive_session_name(Some(&"x".repeat(70)), Some("p")).len(),
            64
        );
    }

    #[test]
    fn not_an_object_is_denied_not_a_panic() {
        for bad in [
            json!(null),
            json!([]),
            json!({"metadata": 3}),
            json!({"metadata": {"annotations": []}}),
        ] {
            assert!(
                mutate(&bad, &Scope::pod_only(None), &cfg(), |_| {
                    TokenLookup::Standalone
                })
                .is_err()
            );
        }
    }

    fn found(role: &str) -> TokenLookup {
        TokenLookup::Found(TokenDefaults {
            secret_name: "payments-token".into(),
            role_arn: Some(role.into()),
            oidc_provider_arn: None,
        })
    }

    /// A pod of a Deployment as the webhook saw it (no name yet), patched, then named.
    fn running(role: &str) -> Value {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-5d8f-", "namespace": "shop",
                "annotations": {"idaas-projector.io/m2m-token": "payments"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]}
        });
        let m = mutate(&p, &Scope::pod_only(Some("shop")), &cfg(), |_| found(role)).unwrap();
        p = apply(&p, &m);
        p["metadata"]["name"] = json!("web-5d8f-x2x9q");
        p
    }

    #[test]
    fn classifies_running_pods() {
        let scope = Scope::pod_only(Some("shop"));
        let role = "acs:ram::1:role/payments";
        let c = classify(running(role), &scope, &cfg(), |_| found(role));
        assert_eq!(
            (c.state, c.m2m_token.as_deref()),
            (PodState::Current, Some("payments"))
        );

        // The M2MToken's role changed since the pod started.
        let c = classify(running(role), &scope, &cfg(), |_| {
            found("acs:ram::1:role/other")
        });
        assert_eq!(c.state, PodState::Stale);
        assert_eq!(c.expected.unwrap().role_arn, "acs:ram::1:role/other");

        // A new release's init image alone changes nothing.
        let upgraded = MutateConfig {
            init_image: "registry.example/idaas-projector:next".into(),
            ..cfg()
        };
        let c = classify(running(role), &scope, &upgraded, |_| found(role));
        assert_eq!(c.state, PodState::Current);

        // Never injected: the webhook was not asked.
        let c = classify(pod(), &scope, &cfg(), |_| TokenLookup::NotFound);
        assert_eq!(c.state, PodState::NotInjected);
        assert_eq!(c.refusal, None);

        // Opted out, or not opted in.
        let mut out = running(role);
        out["metadata"]["labels"] = json!({"idaas-projector.io/injection": "disabled"});
        assert_eq!(
            classify(out, &scope, &cfg(), |_| found(role)).state,
            PodState::NotOptedIn
        );
        let plain = json!({"metadata": {"name": "x"}, "spec": {"containers": []}});
        assert_eq!(
            classify(plain, &scope, &cfg(), |_| found(role)).state,
            PodState::NotOptedIn
        );
    }

    #[test]
    fn classifies_pods_the_webhook_would_refuse_now() {
        let scope = Scope::pod_only(Some("shop"));
        let no_role = TokenLookup::Found(TokenDefaults {
            secret_name: "payments-token".into(),
            ..TokenDefaults::default()
        });
        // Injected with a role the M2MToken no longer names, and none elsewhere.
        let c = classify(running("acs:ram::1:role/payments"), &scope, &cfg(), |_| {
            no_role.clone()
        });
        assert_eq!(c.state, PodState::Stale);
        assert!(c.refusal.unwrap().contains("role"));
        // A bad annotation: opted in, refused, no M2MToken to count it under.
        let bad = json!({"metadata": {"name": "x", "annotations": {
            "idaas-projector.io/m2m-token": "Not A Name"}}, "spec": {"containers": []}});
        let c = classify(bad, &scope, &cfg(), |_| no_role.clone());
        assert_eq!((c.state, c.m2m_token), (PodState::NotInjected, None));
        assert!(c.refusal.is_some());
    }
}

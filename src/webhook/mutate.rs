//! The pure heart of the webhook: from a pod's raw JSON and a configuration to a minimal RFC 6902
//! JSON Patch, or a denial.
//!
//! The pod is never deserialized into typed structs: the patch is computed on the raw JSON, so
//! fields this build does not know survive untouched. `mutate` is idempotent: applying its patch
//! and calling it again yields an empty patch (what `reinvocationPolicy: IfNeeded` relies on).

use std::time::Duration;

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use super::annotations::{self, PodAnnotations, Selection};

/// Name of the injected volume.
pub const VOLUME_NAME: &str = "idaas-projector-token";
/// Where the token volume is mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/idaas-projector.io";
/// The token file the SDKs read.
pub const TOKEN_FILE: &str = "/var/run/secrets/idaas-projector.io/token";
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
    /// The environment variables, in the order they are appended.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (env::ROLE_ARN, self.role_arn.clone()),
            (env::OIDC_PROVIDER_ARN, self.oidc_provider_arn.clone()),
            (env::OIDC_TOKEN_FILE, TOKEN_FILE.to_owned()),
            (env::ROLE_SESSION_NAME, self.role_session_name.clone()),
        ];
        if let Some(region) = &self.sts_region {
            vars.push((env::STS_REGION, region.clone()));
        }
        if self.sts_vpc_endpoint {
            vars.push((env::VPC_ENDPOINT_ENABLED, "true".to_owned()));
        }
        vars
    }

    /// A short hash of everything injected: the value of `idaas-projector.io/injected`.
    ///
    /// It only has to recognise the webhook's own earlier work, not resist forgery (anyone who
    /// can create the pod can write the annotation), so a fast 64-bit FNV-1a over the resolved
    /// values does.
    pub fn hash(&self) -> String {
        let mut h = Fnv1a::default();
        for (k, v) in self.env() {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
        h.field(self.secret_name.as_bytes());
        if let Some(wait) = self.token_wait.filter(|_| !self.windows) {
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

    /// The `idaas-projector-wait` init container, if one is wanted.
    pub fn init_container(&self) -> Option<Value> {
        let wait = self.token_wait.filter(|_| !self.windows)?;
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
            "volumeMounts": [mount()],
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

fn mount() -> Value {
    json!({"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": true})
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

/// Whether the pod runs on Windows nodes (`spec.os.name` or a `kubernetes.io/os` nodeSelector).
pub fn is_windows(spec: &Map<String, Value>) -> bool {
    let os = spec
        .get("os")
        .and_then(|os| os.get("name"))
        .and_then(Value::as_str);
    let selector = spec
        .get("nodeSelector")
        .and_then(|s| s.get("kubernetes.io/os"))
        .and_then(Value::as_str);
    os == Some("windows") || selector == Some("windows")
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

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Decides what to do with one pod.
///
/// `namespace` is the admission request's namespace (pods being created often lack
/// `metadata.namespace`). `lookup` resolves the M2MToken the pod names.
pub fn mutate(
    pod: &Value,
    namespace: Option<&str>,
    config: &MutateConfig,
    lookup: impl FnOnce(&str) -> TokenLookup,
) -> Result<Mutation, Denial> {
    let (metadata, pod_annotations) = pod_metadata(pod)?;
    let Some(wanted) =
        annotations::parse(pod_annotations, config.default_token_wait).map_err(Denial)?
    else {
        return Ok(Mutation::Skipped);
    };
    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| Denial("the Pod has no spec object".to_owned()))?;
    let regular = containers(spec, "containers")?;
    let init: Vec<ContainerRef<'_>> = containers(spec, "initContainers")?;
    let user_init = || init.iter().filter(|c| c.name != INIT_CONTAINER_NAME);
    check_selection(&wanted.selection, regular.iter().chain(user_init()))?;

    let lookup = lookup(&wanted.m2m_token);
    let not_found = matches!(lookup, TokenLookup::NotFound);
    let (defaults, found) = token_defaults(&wanted, lookup)?;
    let mut injection = resolve(&wanted, defaults, found, namespace, metadata, spec, config)?;
    let any_selected = regular
        .iter()
        .chain(user_init())
        .any(|c| wanted.selection.selects(c.name));
    if !any_selected {
        // No container reads the token: holding the pod for it would only delay it.
        injection.token_wait = None;
    }
    let mut warnings = warnings(&wanted, &injection, any_selected, not_found);
    let already_injected = pod_annotations.is_some_and(|a| a.contains_key(annotations::INJECTED));
    check_container_names(already_injected, &regular, &init, &injection)?;

    let mut ops = Vec::with_capacity(8 + 2 * regular.len() + 2 * init.len());
    ops.extend(injected_annotation_op(pod_annotations, injection.hash()));
    ops.extend(volume_op(spec, already_injected, &injection)?);
    // Mounts and environment of every selected container.
    let vars = injection.env();
    for c in regular.iter().chain(user_init()) {
        if wanted.selection.selects(c.name) {
            container_ops(c, &vars, &mut ops, &mut warnings)?;
        }
    }
    // The init container goes first; inserting at index 0 shifts the others, so it comes last.
    if let Some(init_container) = injection.init_container()
        && !init.iter().any(|c| c.name == INIT_CONTAINER_NAME)
    {
        ops.push(match spec.get("initContainers") {
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

/// The pod's metadata and annotations, each absent or an object.
fn pod_metadata(pod: &Value) -> Result<(Option<&Object>, Option<&Object>), Denial> {
    let pod = pod
        .as_object()
        .ok_or_else(|| Denial("the object is not a Pod: expected a JSON object".to_owned()))?;
    let metadata = match pod.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(Denial("metadata is not an object".to_owned())),
    };
    let annotations = match metadata.and_then(|m| m.get("annotations")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => Some(a),
        Some(_) => return Err(Denial("metadata.annotations is not an object".to_owned())),
    };
    Ok((metadata, annotations))
}

/// The M2MToken's defaults and whether it was found; the Secret is named after the M2MToken
/// when it was not (or in standalone mode).
fn token_defaults(
    wanted: &PodAnnotations,
    lookup: TokenLookup,
) -> Result<(TokenDefaults, bool), Denial> {
    match lookup {
        TokenLookup::Found(defaults) => Ok((defaults, true)),
        TokenLookup::NotFound | TokenLookup::Standalone => Ok((
            TokenDefaults {
                secret_name: wanted.m2m_token.clone(),
                ..TokenDefaults::default()
            },
            false,
        )),
        TokenLookup::Unavailable => Err(Denial(format!(
            "the webhook has not loaded the cluster's M2MTokens yet, so M2MToken {:?} cannot be resolved; retry in a few seconds",
            wanted.m2m_token
        ))),
    }
}

/// What the admission answer warns about, before any container's own warnings.
fn warnings(
    wanted: &PodAnnotations,
    injection: &Injection,
    any_selected: bool,
    not_found: bool,
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
            if injection.init_container().is_some() {
                "waits"
            } else {
                "has no token"
            }
        ));
    }
    if injection.windows && wanted.token_wait.is_some() {
        warnings.push(
            "Windows pod: no idaas-projector-wait init container; the application must retry until the token file exists"
                .to_owned(),
        );
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
    if injection.init_container().is_some() && regular.iter().any(|c| c.name == INIT_CONTAINER_NAME)
    {
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

/// The annotation that records what was injected, unless it already says so.
fn injected_annotation_op(
    pod_annotations: Option<&Map<String, Value>>,
    hash: String,
) -> Option<PatchOperation> {
    let path = ptr(&["metadata", "annotations", annotations::INJECTED]);
    match pod_annotations.and_then(|a| a.get(annotations::INJECTED)) {
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
    wanted: &PodAnnotations,
    defaults: TokenDefaults,
    found: bool,
    namespace: Option<&str>,
    metadata: Option<&Map<String, Value>>,
    spec: &Map<String, Value>,
    config: &MutateConfig,
) -> Result<Injection, Denial> {
    let source = if found {
        format!(" or spec.roleArn on M2MToken {:?}", wanted.m2m_token)
    } else {
        String::new()
    };
    let role_arn = wanted
        .role_arn
        .clone()
        .or(defaults.role_arn)
        .ok_or_else(|| {
            Denial(format!(
                "no RAM role to assume: set annotation {} (acs:ram::<account id>:role/<role name>){source}",
                annotations::ROLE_ARN
            ))
        })?;
    let oidc_provider_arn = wanted
        .oidc_provider_arn
        .clone()
        .or(defaults.oidc_provider_arn)
        .or_else(|| config.default_oidc_provider_arn.clone())
        .ok_or_else(|| {
            Denial(format!(
                "no OIDC provider ARN: set annotation {} (acs:ram::<account id>:oidc-provider/<name>), \
                 spec.oidcProviderArn on the M2MToken, or the webhook's --default-oidc-provider-arn",
                annotations::OIDC_PROVIDER_ARN
            ))
        })?;
    let name_field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let namespace = namespace
        .filter(|n| !n.is_empty())
        .or_else(|| name_field("namespace"));
    let role_session_name = wanted.role_session_name.clone().unwrap_or_else(|| {
        derive_session_name(
            namespace,
            name_field("name").or_else(|| name_field("generateName")),
        )
    });
    Ok(Injection {
        secret_name: defaults.secret_name,
        role_arn,
        oidc_provider_arn,
        role_session_name,
        sts_region: wanted
            .sts_region
            .clone()
            .or_else(|| config.default_sts_region.clone()),
        sts_vpc_endpoint: wanted.sts_vpc_endpoint,
        token_wait: wanted.token_wait,
        init_image: config.init_image.clone(),
        windows: is_windows(spec),
    })
}

fn container_ops(
    c: &ContainerRef<'_>,
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
        if same_path(path, MOUNT_PATH) {
            if volume == VOLUME_NAME {
                mounted = true;
            } else {
                return Err(Denial(format!(
                    "container {:?} already mounts volume {volume:?} at {MOUNT_PATH}, where idaas-projector mounts the token; \
                     move that mount or leave the container out with annotation {}",
                    c.name,
                    annotations::SKIP_CONTAINERS
                )));
            }
        }
    }
    if !mounted {
        ops.push(match mounts {
            Some(_) => add(
                ptr(&[base[0], base[1], base[2], "volumeMounts", "-"]),
                mount(),
            ),
            None => add(
                ptr(&[base[0], base[1], base[2], "volumeMounts"]),
                json!([mount()]),
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
        let m = mutate(&p, Some("shop"), &cfg(), |_| TokenLookup::Standalone).unwrap();
        let out = apply(&p, &m);
        assert_eq!(
            out["spec"]["initContainers"][0]["name"],
            INIT_CONTAINER_NAME
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"][3]["value"], "shop.web",
            "{out:#}"
        );
        let again = mutate(&out, Some("shop"), &cfg(), |_| TokenLookup::Standalone).unwrap();
        assert_eq!(
            again,
            Mutation::Injected {
                patch: Patch(vec![]),
                warnings: vec![]
            }
        );
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
            assert!(mutate(&bad, None, &cfg(), |_| TokenLookup::Standalone).is_err());
        }
    }
}

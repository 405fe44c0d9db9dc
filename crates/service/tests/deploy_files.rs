//! The deploy files, checked against the binary they deploy: `deploy/cloudrun/service.yaml`,
//! `deploy/kubernetes/`, `compose.yaml` with `deploy/compose.env.example`, and the
//! `Dockerfile`. Each file is parsed (YAML with yaml-rust2); the port is the one the binary
//! listens on, the probe paths are routes the running service answers 200, every environment
//! name is a declared setting, the settings the files provide make valid `Settings` with every
//! required one present and nothing `serve` would warn about, secrets come from secret
//! stores, and every command is a real subcommand.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use common::app::TestApp;
use common::db::{Db, TestDb};
use messenger_handover::config::spec::{IfUnset, Kind, Spec};
use messenger_handover::config::{KNOWN_SETTINGS, RawSettings, SETTINGS, Settings};
use wiremock::MockServer;
use yaml_rust2::{Yaml, YamlLoader};

/// Cloud Run sends SIGKILL this long after SIGTERM (its container contract).
const CLOUD_RUN_STOP_SECS: u64 = 10;

/// What a value from a secret store stands for in these checks (long enough for a token).
const FROM_SECRET_STORE: &str = "stand-in-for-a-secret-value";

/// `DATABASE_URL` in Secret Manager, in the form `deploy/cloudrun/service.yaml` documents.
const CLOUD_SQL_URL: &str =
    "postgres://handover:pw@localhost/handover?host=/cloudsql/PROJECT_ID:REGION:INSTANCE";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The one YAML document of `path`.
fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

/// A scalar as text (YAML reads `8080` as a number, `"8"` as text).
fn text(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list(node: &Yaml) -> &[Yaml] {
    node.as_vec().map(Vec::as_slice).unwrap_or_default()
}

fn keys(node: &Yaml) -> Vec<String> {
    node.as_hash()
        .map(|h| h.keys().filter_map(text).collect())
        .unwrap_or_default()
}

fn spec(name: &str) -> &'static Spec {
    SETTINGS
        .iter()
        .copied()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not a declared setting"))
}

fn default_of(name: &str) -> Option<&'static str> {
    match spec(name).if_unset {
        IfUnset::Default(value) => Some(value),
        _ => None,
    }
}

fn assert_declared(name: &str, file: &str) {
    assert!(
        KNOWN_SETTINGS.contains(&name),
        "{file}: {name} is not a setting of messenger-handover (config::declare)"
    );
}

/// The settings a file provides make valid `Settings` (so every required one is there and
/// every value passes its check), with nothing `serve` would warn about; returns them.
fn valid_settings(values: &BTreeMap<String, String>, file: &str) -> Settings {
    for required in SETTINGS
        .iter()
        .filter(|s| matches!(s.if_unset, IfUnset::Required(_)))
    {
        assert!(
            values.contains_key(required.name),
            "{file}: the required {} is not provided",
            required.name
        );
    }
    let raw = RawSettings::from_pairs(values.clone());
    let settings = Settings::from_raw(&raw)
        .unwrap_or_else(|problems| panic!("{file}: {}", problems.join("; ")));
    let warnings: Vec<String> = messenger_handover::doctor::startup_warnings(&settings)
        .into_iter()
        .map(|f| f.text)
        .collect();
    assert!(
        warnings.is_empty(),
        "{file}: serve would warn: {warnings:?}"
    );
    settings
}

/// `messenger-handover COMMAND --help` exits 0: a real subcommand.
fn assert_subcommand(command: &str, file: &str) {
    let out = Command::new(common::process::BIN)
        .args([command, "--help"])
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{file}: `{command}` is not a subcommand of messenger-handover"
    );
}

/// The service answers 200 on each path (and 404 on one it does not serve, so the check can
/// fail): the probes point at real routes.
async fn assert_routes(paths: &[String]) {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = MockServer::start().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let get = |path: String| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.base);
        async move { client.get(url).send().await.expect("GET").status().as_u16() }
    };
    assert_eq!(get("/no-such-probe".into()).await, 404);
    for path in paths {
        assert_eq!(get(path.clone()).await, 200, "GET {path}");
    }
    app.stop().await;
}

/// The binary's listen port when `PORT` is unset, which every file relies on.
fn default_port() -> i64 {
    default_of("PORT").unwrap().parse().unwrap()
}

/// An HTTP probe's path and port (a number, or the name of a container port).
fn probe(container: &Yaml, which: &str, file: &str) -> (String, String) {
    let get = &container[which]["httpGet"];
    let path = text(&get["path"]).unwrap_or_else(|| panic!("{file}: {which} has no httpGet path"));
    let port = text(&get["port"]).unwrap_or_else(|| panic!("{file}: {which} has no port"));
    (path, port)
}

#[test]
fn the_subcommand_check_can_fail() {
    let out = Command::new(common::process::BIN)
        .args(["deploy-everything", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_cloud_sql_url_reaches_the_socket() {
    // The Unix socket Cloud Run mounts for `run.googleapis.com/cloudsql-instances`.
    // Parsed as the service parses it: its own URL options out, the rest to the driver.
    let url = messenger_handover::store::db::postgres::parse_url(CLOUD_SQL_URL).unwrap();
    let options = postgres::Config::from_str(&url.url).unwrap();
    assert_eq!(
        options.get_hosts(),
        [postgres::config::Host::Unix(
            "/cloudsql/PROJECT_ID:REGION:INSTANCE".into()
        )]
    );
    assert_eq!(options.get_dbname(), Some("handover"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_run_service() {
    const FILE: &str = "deploy/cloudrun/service.yaml";
    let doc = yaml(FILE);
    assert_eq!(
        text(&doc["apiVersion"]).as_deref(),
        Some("serving.knative.dev/v1")
    );
    assert_eq!(text(&doc["kind"]).as_deref(), Some("Service"));
    let template = &doc["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    let annotation = |name: &str| text(&annotations[name]);

    // The worker runs inside the service: at least one instance, CPU outside requests too.
    let min: u32 = annotation("autoscaling.knative.dev/minScale")
        .expect("minScale")
        .parse()
        .unwrap();
    assert!(min >= 1, "min instances {min}");
    assert_eq!(
        annotation("run.googleapis.com/cpu-throttling").as_deref(),
        Some("false")
    );
    let concurrency = template["spec"]["containerConcurrency"].as_i64();
    assert!(
        concurrency.is_some_and(|c| c > 1),
        "containerConcurrency {concurrency:?}"
    );

    let containers = list(&template["spec"]["containers"]);
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let args: Vec<String> = list(&container["args"]).iter().filter_map(text).collect();
    assert_eq!(args, ["serve"]);
    assert_subcommand(&args[0], FILE);

    // Cloud Run sets PORT to the container port: it must be the one the binary uses.
    let ports = list(&container["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"].as_i64(), Some(default_port()));

    // Settings: declared names; secrets only from Secret Manager.
    let mut values = BTreeMap::new();
    let mut from_secrets = Vec::new();
    for var in list(&container["env"]) {
        let name = text(&var["name"]).expect("env name");
        assert_declared(&name, FILE);
        assert_ne!(name, "PORT", "{FILE}: PORT is reserved by Cloud Run");
        let value = if let Some(value) = text(&var["value"]) {
            assert_ne!(
                spec(&name).kind,
                Kind::Secret,
                "{FILE}: the secret {name} is written in the file; use a secretKeyRef"
            );
            value
        } else {
            let secret = &var["valueFrom"]["secretKeyRef"];
            assert!(
                text(&secret["name"]).is_some() && text(&secret["key"]).is_some(),
                "{FILE}: {name} has neither a value nor a secretKeyRef with name and key"
            );
            from_secrets.push(name.clone());
            match name.as_str() {
                "DATABASE_URL" => CLOUD_SQL_URL.to_owned(),
                _ => format!("{FROM_SECRET_STORE}-{name}"),
            }
        };
        assert!(
            values.insert(name.clone(), value).is_none(),
            "{FILE}: {name} twice"
        );
    }
    // The database URL holds a password.
    assert!(
        from_secrets.contains(&"DATABASE_URL".to_owned()),
        "{FILE}: DATABASE_URL"
    );
    let settings = valid_settings(&values, FILE);
    assert!(
        settings.database_url.starts_with("postgres"),
        "{FILE}: Cloud Run's filesystem is lost with the instance; use PostgreSQL"
    );
    assert!(annotation("run.googleapis.com/cloudsql-instances").is_some());
    assert!(
        settings.shutdown_grace_secs < CLOUD_RUN_STOP_SECS,
        "SHUTDOWN_GRACE_SECS {} leaves no time before Cloud Run's SIGKILL",
        settings.shutdown_grace_secs
    );

    // Probes on the container port, at routes the service answers.
    let (startup, startup_port) = probe(container, "startupProbe", FILE);
    let (liveness, liveness_port) = probe(container, "livenessProbe", FILE);
    assert_eq!(startup, "/readyz");
    assert_eq!(liveness, "/healthz");
    for port in [startup_port, liveness_port] {
        assert_eq!(port, default_port().to_string());
    }
    assert_routes(&[startup, liveness]).await;
}

/// Every document of `deploy/kubernetes/` by kind (one of each, as shipped).
fn kubernetes() -> BTreeMap<String, (String, Yaml)> {
    let dir = repo().join("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let doc = yaml(&format!("deploy/kubernetes/{name}"));
        let kind = text(&doc["kind"]).unwrap_or_else(|| panic!("{name}: no kind"));
        assert!(
            out.insert(kind.clone(), (name, doc)).is_none(),
            "two {kind}s"
        );
    }
    out
}

/// The pod spec's one container, and the checks every pod of the service passes.
fn pod_container<'a>(pod: &'a Yaml, file: &str) -> &'a Yaml {
    let security = &pod["securityContext"];
    assert_eq!(
        security["runAsNonRoot"].as_bool(),
        Some(true),
        "{file}: runAsNonRoot"
    );
    assert_eq!(
        security["runAsUser"].as_i64(),
        Some(image_uid()),
        "{file}: the image's user"
    );
    let containers = list(&pod["containers"]);
    assert_eq!(containers.len(), 1, "{file}");
    let container = &containers[0];
    let own = &container["securityContext"];
    assert_eq!(
        own["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{file}"
    );
    assert_eq!(
        own["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{file}"
    );
    assert!(
        text(&container["resources"]["limits"]["memory"]).is_some()
            && text(&container["resources"]["requests"]["cpu"]).is_some(),
        "{file}: resources"
    );
    let args: Vec<String> = list(&container["args"]).iter().filter_map(text).collect();
    assert_eq!(args.len(), 1, "{file}: one subcommand");
    assert_subcommand(&args[0], file);
    container
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests() {
    let docs = kubernetes();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Job",
        "Kustomization",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ] {
        assert!(docs.contains_key(kind), "deploy/kubernetes has no {kind}");
    }
    let (_, config) = &docs["ConfigMap"];
    let (_, secret) = &docs["Secret"];
    let (deployment_file, deployment) = &docs["Deployment"];
    let (job_file, job) = &docs["Job"];

    // Settings: the ConfigMap's (never a secret) and the Secret's, by their declared names.
    let mut values = BTreeMap::new();
    for name in keys(&config["data"]) {
        assert_declared(&name, "configmap.yaml");
        assert_ne!(
            spec(&name).kind,
            Kind::Secret,
            "configmap.yaml: {name} is a secret; it belongs in the Secret"
        );
        values.insert(name.clone(), text(&config["data"][name.as_str()]).unwrap());
    }
    for name in keys(&secret["stringData"]) {
        assert_declared(&name, "secret.example.yaml");
        let value = text(&secret["stringData"][name.as_str()]).unwrap();
        assert!(values.insert(name.clone(), value).is_none(), "{name} twice");
    }
    let settings = valid_settings(&values, "deploy/kubernetes");
    assert!(
        settings.database_url.starts_with("postgres"),
        "several replicas need PostgreSQL"
    );

    // The Deployment: the ConfigMap and the Secret, the port, probes, the grace.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = pod_container(pod, deployment_file);
    assert_eq!(list(&container["args"])[0].as_str(), Some("serve"));
    let sources: Vec<(String, String)> = list(&container["envFrom"])
        .iter()
        .flat_map(|from| {
            [("configMapRef", "ConfigMap"), ("secretRef", "Secret")]
                .into_iter()
                .filter_map(|(field, kind)| {
                    text(&from[field]["name"]).map(|name| (kind.to_owned(), name))
                })
        })
        .collect();
    for kind in ["ConfigMap", "Secret"] {
        let name = text(&docs[kind].1["metadata"]["name"]).unwrap();
        assert!(
            sources.contains(&(kind.to_owned(), name.clone())),
            "{deployment_file}: envFrom lacks the {kind} {name}"
        );
    }
    assert!(
        list(&container["env"]).is_empty(),
        "{deployment_file}: settings belong in the ConfigMap or Secret"
    );
    let ports = list(&container["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"].as_i64(), Some(default_port()));
    let port_name = text(&ports[0]["name"]).expect("a named port");
    let mut paths = Vec::new();
    for (which, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let (probe_path, port) = probe(container, which, deployment_file);
        assert_eq!(probe_path, path, "{which}");
        assert!(
            port == port_name || port == default_port().to_string(),
            "{which} port {port}"
        );
        paths.push(probe_path);
    }
    assert_routes(&paths).await;
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0) as u64;
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) as u64;
    assert!(
        pause + settings.shutdown_grace_secs < grace,
        "terminationGracePeriodSeconds {grace} must exceed the preStop pause {pause} + SHUTDOWN_GRACE_SECS {}",
        settings.shutdown_grace_secs
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];

    // The Service and the PodDisruptionBudget select the Deployment's pods.
    let selects = |selector: &Yaml| {
        keys(selector)
            .iter()
            .all(|k| text(&selector[k.as_str()]) == text(&labels[k.as_str()]))
            && !keys(selector).is_empty()
    };
    let (_, service) = &docs["Service"];
    assert!(
        selects(&service["spec"]["selector"]),
        "the Service selects the pods"
    );
    let target = text(&list(&service["spec"]["ports"])[0]["targetPort"]).unwrap();
    assert!(
        target == port_name || target == default_port().to_string(),
        "targetPort {target}"
    );
    let (_, pdb) = &docs["PodDisruptionBudget"];
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"]),
        "the PDB selects the pods"
    );
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let min_available = pdb["spec"]["minAvailable"].as_i64().expect("minAvailable");
    assert!(
        min_available >= 1 && min_available < replicas,
        "a drain can proceed"
    );

    // The migration Job: `migrate`, the same image, DATABASE_URL from the Secret.
    let job_pod = &job["spec"]["template"]["spec"];
    let job_container = pod_container(job_pod, job_file);
    assert_eq!(list(&job_container["args"])[0].as_str(), Some("migrate"));
    assert_eq!(
        text(&job_container["image"]),
        text(&container["image"]),
        "one image"
    );
    assert_eq!(text(&job_pod["restartPolicy"]).as_deref(), Some("Never"));
    let secret_name = text(&secret["metadata"]["name"]).unwrap();
    let job_env = list(&job_container["env"]);
    assert!(!job_env.is_empty());
    for var in job_env {
        let name = text(&var["name"]).unwrap();
        assert_declared(&name, job_file);
        let from = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(text(&from["name"]).as_ref(), Some(&secret_name), "{name}");
        let key = text(&from["key"]).unwrap();
        assert!(
            values.contains_key(&key),
            "{job_file}: the Secret has no {key}"
        );
    }

    // kustomization.yaml lists every manifest but the example Secret and the Job.
    let (_, kustomization) = &docs["Kustomization"];
    let listed: Vec<String> = list(&kustomization["resources"])
        .iter()
        .filter_map(text)
        .collect();
    for (kind, (file, _)) in &docs {
        let expected = !matches!(kind.as_str(), "Kustomization" | "Secret" | "Job");
        assert_eq!(
            listed.contains(file),
            expected,
            "kustomization.yaml and {file}"
        );
    }
}

/// The env file's lines: `NAME=value` (set) and `# NAME=value` (commented out).
fn env_lines(text: &str) -> Vec<(bool, String, String)> {
    text.lines()
        .filter_map(|line| {
            let (set, rest) = match line.strip_prefix('#') {
                Some(rest) => (false, rest.trim_start()),
                None => (true, line),
            };
            let (name, value) = rest.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (set, name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[test]
fn the_compose_env_example_lists_every_setting() {
    const FILE: &str = "deploy/compose.env.example";
    let lines = env_lines(&read(FILE));
    for (_, name, value) in &lines {
        assert_declared(name, FILE);
        // A commented line shows the default, if the setting has one.
        if let (Some(default), false) = (default_of(name), value.is_empty())
            && !lines.iter().any(|(set, n, _)| *set && n == name)
        {
            assert_eq!(value, default, "{FILE}: {name} is not the default");
        }
    }
    for setting in SETTINGS {
        let count = lines.iter().filter(|(_, n, _)| n == setting.name).count();
        assert_eq!(count, 1, "{FILE}: {} appears {count} times", setting.name);
        if matches!(setting.if_unset, IfUnset::Required(_)) {
            assert!(
                lines.iter().any(|(set, n, _)| *set && n == setting.name),
                "{FILE}: the required {} is commented out",
                setting.name
            );
        }
    }
}

/// The example, filled in the two documented ways: a token, or basic auth.
#[test]
fn the_compose_env_example_works_with_a_token_and_with_basic_auth() {
    let lines = env_lines(&read("deploy/compose.env.example"));
    let filled = |auth: &[(&str, &str)]| {
        let mut values: BTreeMap<String, String> = lines
            .iter()
            .filter(|(set, _, _)| *set)
            .map(|(_, n, v)| (n.clone(), v.clone()))
            .collect();
        // What the person copying it types in (compose.yaml sets DATABASE_URL).
        for (name, value) in [
            (
                "DATABASE_URL",
                "postgres://handover:handover@postgres:5432/handover",
            ),
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "bot-app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "EAAB-page-token"),
            ("FB_VERIFY_TOKEN", "verify-me"),
            ("FB_PAGE_ID", "104857600000001"),
            ("FB_WEBHOOK_APP_ID", "222222222222222"),
            ("FB_WEBHOOK_APP_SECRET", "companion-app-secret"),
            ("DIALOGFLOW_PROJECT_ID", "my-agent-project"),
        ]
        .into_iter()
        .chain(auth.iter().copied())
        {
            assert!(
                lines.iter().any(|(_, n, _)| n == name),
                "the example has no line for {name}"
            );
            values.insert(name.to_owned(), value.to_owned());
        }
        values
    };
    let token = valid_settings(
        &filled(&[("FULFILLMENT_TOKEN", "0123456789abcdef0123456789abcdef")]),
        "compose.env with a token",
    );
    assert!(matches!(
        token.fulfillment_auth,
        messenger_handover::config::FulfillmentAuth::Bearer(_)
    ));
    let basic = valid_settings(
        &filled(&[
            ("FULFILLMENT_USERNAME", "dialogflow"),
            ("FULFILLMENT_PASSWORD", "a-password"),
        ]),
        "compose.env with basic auth",
    );
    assert!(matches!(
        basic.fulfillment_auth,
        messenger_handover::config::FulfillmentAuth::Basic { .. }
    ));
}

#[test]
fn compose_builds_once_and_takes_its_settings_from_the_env_file() {
    const FILE: &str = "compose.yaml";
    let doc = yaml(FILE);
    let services = &doc["services"];
    let built: Vec<String> = keys(services)
        .into_iter()
        .filter(|s| !services[s.as_str()]["build"].is_badvalue())
        .collect();
    assert_eq!(
        built.len(),
        1,
        "{FILE}: one service builds the image: {built:?}"
    );
    let image = text(&services[built[0].as_str()]["image"]).expect("the built image's name");
    let ours: Vec<String> = keys(services)
        .into_iter()
        .filter(|s| text(&services[s.as_str()]["image"]).as_ref() == Some(&image))
        .collect();
    assert!(
        ours.len() >= 3,
        "{FILE}: migrate and two replicas run {image}: {ours:?}"
    );
    for name in &ours {
        let service = &services[name.as_str()];
        if name != &built[0] {
            assert_eq!(
                text(&service["pull_policy"]).as_deref(),
                Some("never"),
                "{name}"
            );
        }
        let env_file = text(&service["env_file"]).expect("env_file");
        assert_eq!(env_file, "deploy/compose.env", "{name}");
        // Only what compose itself owns is set here; credentials come from the env file.
        for var in keys(&service["environment"]) {
            assert_declared(&var, FILE);
            assert_eq!(
                var, "DATABASE_URL",
                "{FILE}: {name} sets {var}; put it in the env file"
            );
        }
        match text(
            &list(&service["command"])
                .first()
                .cloned()
                .unwrap_or(Yaml::Null),
        ) {
            Some(command) => assert_subcommand(&command, FILE),
            None => {
                // The image's default command, serve; compose checks its health.
                let test: Vec<String> = list(&service["healthcheck"]["test"])
                    .iter()
                    .filter_map(text)
                    .collect();
                assert_eq!(
                    test.last().map(String::as_str),
                    Some("healthcheck"),
                    "{name}"
                );
                assert_subcommand("healthcheck", FILE);
                let stop = text(&service["stop_grace_period"]).expect("stop_grace_period");
                let secs: u64 = stop.trim_end_matches('s').parse().unwrap();
                let grace: u64 = default_of("SHUTDOWN_GRACE_SECS").unwrap().parse().unwrap();
                assert!(secs > grace, "{name}: stop_grace_period {stop}");
            }
        }
    }
}

/// The Dockerfile's instructions, continuation lines joined and comments left out:
/// (`INSTRUCTION`, its arguments), of every stage.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (name, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((name.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The arguments of each `name` instruction of the final stage.
fn final_stage(name: &str) -> Vec<String> {
    let all = dockerfile();
    let last_from = all.iter().rposition(|(n, _)| n == "FROM").expect("FROM");
    all[last_from..]
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, args)| args.clone())
        .collect()
}

/// The image's user (`USER uid:gid` in the Dockerfile), which the pods run as.
fn image_uid() -> i64 {
    let user = final_stage("USER");
    assert_eq!(user.len(), 1, "the Dockerfile sets USER once");
    user[0]
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("a numeric uid")
}

/// A JSON-array (exec form) instruction's words.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form: {args}: {e}"))
}

#[test]
fn the_dockerfile_matches_the_binary() {
    assert_eq!(final_stage("EXPOSE"), [default_port().to_string()]);
    assert!(image_uid() > 0, "non-root");
    assert_eq!(final_stage("VOLUME"), ["/data"]);
    let entrypoint = exec_form(&final_stage("ENTRYPOINT")[0]);
    assert!(
        entrypoint[0].ends_with("/messenger-handover"),
        "{entrypoint:?}"
    );
    let cmd = exec_form(&final_stage("CMD")[0]);
    assert_eq!(cmd, ["serve"]);
    assert_subcommand(&cmd[0], "Dockerfile");
    let health = final_stage("HEALTHCHECK");
    assert_eq!(health.len(), 1);
    let (_, probe) = health[0].split_once("CMD ").expect("HEALTHCHECK … CMD");
    let probe = exec_form(probe);
    assert_eq!(probe.len(), 2, "{probe:?}");
    assert_eq!(probe[0], entrypoint[0]);
    assert_subcommand(&probe[1], "Dockerfile");
    assert_eq!(probe[1], "healthcheck");
    // Every setting the image sets is declared (PATH aside).
    for env in final_stage("ENV") {
        for pair in env.split_whitespace() {
            let name = pair.split('=').next().unwrap();
            if name != "PATH" {
                assert_declared(name, "Dockerfile");
            }
        }
    }
}

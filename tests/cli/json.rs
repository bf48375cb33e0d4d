//! Typed output: every command's `--json` answer checked against the JSON Schema that
//! `--print-schema` prints for it (a small validator below, strict about unknown fields),
//! and both its JSON and its human form pinned by snapshots.

use serde_json::Value;

use crate::support::{BLOCK, TestRepo, redact};

/// Check `value` against `schema` (the subset of JSON Schema 2020-12 schemars writes).
/// Objects with `properties` and no `additionalProperties` are closed: a field the schema
/// does not document is an error (like `deny_unknown_fields`).
fn validate(schema: &Value, root: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(obj) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{at}: schema {schema} allows nothing")),
        };
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").ok_or(format!("{at}: ref {r}"))?;
        return validate(&root["$defs"][name], root, value, at);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = obj.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|s| validate(s, root, value, at).err())
                .collect();
            if errors.len() == options.len() {
                return Err(format!("{at}: no {key} option fits {value}: {errors:?}"));
            }
        }
    }
    if let Some(c) = obj.get("const")
        && c != value
    {
        return Err(format!("{at}: {value} is not {c}"));
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {e:?}"));
    }
    if let Some(t) = obj.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: type {t}")),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(n) = value.as_i64() {
        if obj
            .get("minimum")
            .and_then(Value::as_i64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: {n} below the minimum"));
        }
        if obj
            .get("maximum")
            .and_then(Value::as_i64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: {n} above the maximum"));
        }
    }
    if let Some(map) = value.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for req in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !map.contains_key(req) {
                return Err(format!("{at}: required field {req:?} missing"));
            }
        }
        for (k, v) in map {
            let here = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                obj.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(s, root, v, &here)?,
                (None, Some(s)) => validate(s, root, v, &here)?,
                (None, None) if props.is_some() => {
                    return Err(format!("{here}: a field the schema does not document"));
                }
                (None, None) => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(s) = obj.get("items") {
            for (i, v) in items.iter().enumerate() {
                validate(s, root, v, &format!("{at}[{i}]"))?;
            }
        }
        let n = items.len() as u64;
        if obj
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || obj
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: {n} items"));
        }
    }
    Ok(())
}

/// The printed schema of `name`.
fn schema(repo: &TestRepo, name: &str) -> Value {
    let schema = repo.wp(["--print-schema", name]).succeeds().json();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(
        schema["title"]
            .as_str()
            .unwrap()
            .starts_with("git worktree-ports ")
    );
    schema
}

/// Validate `out` against `--print-schema name`.
fn conforms(repo: &TestRepo, name: &str, out: &Value) {
    let schema = schema(repo, name);
    if let Err(e) = validate(&schema, &schema, out, "$") {
        panic!("{name}: the answer does not fit its schema: {e}\n{out:#}");
    }
    if name != "env" {
        assert_eq!(out["schema"], 1, "{name}: {out}");
    }
}

/// Stable text for a snapshot: temp paths, this repository's ports, the test binary,
/// lease ids and times replaced.
fn stable(text: &str, repo: &TestRepo, lease: Option<&str>) -> String {
    let mut out = redact(text, repo);
    if let Some(id) = lease {
        out = out.replace(id, "[LEASE]");
    }
    // RFC 3339 times (lease expiry).
    let re_time = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("20") {
            let cand = &rest[i..];
            let is_time = cand.len() >= 20
                && cand.as_bytes()[4] == b'-'
                && cand.as_bytes()[10] == b'T'
                && cand.as_bytes()[19] == b'Z';
            if is_time {
                out.push_str(&rest[..i]);
                out.push_str("[TIME]");
                rest = &rest[i + 20..];
            } else {
                out.push_str(&rest[..i + 2]);
                rest = &rest[i + 2..];
            }
        }
        out.push_str(rest);
        out
    };
    re_time(&out)
}

/// Every command with an answer: its JSON fits the schema `--print-schema` prints, and
/// both forms are pinned (insta snapshots `json__<command>` and `human__<command>`).
#[test]
fn every_json_answer_fits_its_printed_schema_and_both_forms_are_pinned() {
    let repo = TestRepo::new();
    let base = repo.base;
    let mut pinned = 0;
    let mut both = |name: &str, args: &[&str], json_args: &[&str], lease: Option<&str>| {
        let human = repo.wp(args).output();
        let json_out = repo.wp(json_args).output();
        let value: Value = serde_json::from_slice(&json_out.0.stdout)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", json_out.describe()));
        conforms(&repo, name, &value);
        let text = human.stdout() + &human.stderr();
        insta::assert_snapshot!(format!("human__{name}"), stable(&text, &repo, lease));
        insta::assert_snapshot!(
            format!("json__{name}"),
            stable(&serde_json::to_string_pretty(&value).unwrap(), &repo, lease)
        );
        pinned += 1;
        value
    };

    both("allocate", &["allocate"], &["allocate", "--json"], None);
    let feat = repo.path("feat");
    let added = repo
        .wp(["add", "--no-render", feat.to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    conforms(&repo, "add", &added);
    let feat2 = repo.path("feat2");
    repo.wp(["add", "--no-render", feat2.to_str().unwrap()])
        .succeeds();
    both("list", &["list"], &["list", "--json"], None);
    both(
        "list-all",
        &["list", "--all"],
        &["list", "--all", "--json"],
        None,
    );
    let (free, mine) = ((base + BLOCK - 1).to_string(), base.to_string());
    both(
        "check",
        &["check", &mine, &free],
        &["check", &mine, &free, "--json"],
        None,
    );
    both("get", &["get", "web"], &["get", "web", "--json"], None);
    both("render", &["render"], &["render", "--json"], None);
    both("env", &["env"], &["env", "--format", "json"], None);
    both("suggest", &["suggest"], &["suggest", "--json"], None);
    both(
        "status",
        &["status", "--all"],
        &["status", "--all", "--json"],
        None,
    );
    both("doctor", &["doctor"], &["doctor", "--json"], None);
    both(
        "proxy-status",
        &["proxy", "status"],
        &["proxy", "status", "--json"],
        None,
    );
    both(
        "hooks-status",
        &["hooks", "status"],
        &["hooks", "status", "--json"],
        None,
    );

    let range = format!("{}-{}", base + 30, base + 35);
    let lease = repo
        .wp(["lease", "--range", &range, "--count", "2", "--json"])
        .succeeds()
        .json();
    conforms(&repo, "lease", &lease);
    let id = lease["id"].as_str().unwrap().to_string();
    let released = repo
        .wp(["release", "--lease", &id, "--json"])
        .succeeds()
        .json();
    conforms(&repo, "release-lease", &released);
    insta::assert_snapshot!(
        "json__lease",
        stable(
            &serde_json::to_string_pretty(&lease).unwrap(),
            &repo,
            Some(&id)
        )
    );

    both(
        "release",
        &["release", "feat", "--service", "db"],
        &["release", "feat", "--service", "web", "--json"],
        None,
    );
    both(
        "remove",
        &["remove", "feat2"],
        &["remove", "--json", "feat"],
        None,
    );
    // The main worktree cannot be removed: that answer is an error, which has its schema.
    let err = repo.wp(["remove", "--json", "main"]).fails().json();
    conforms(&repo, "error", &err);
    assert_eq!(err["error"], "MAIN_WORKTREE", "{err}");

    let gone = repo.path("gone");
    repo.wp(["add", gone.to_str().unwrap()]).succeeds();
    std::fs::remove_dir_all(&gone).unwrap();
    both("prune", &["prune", "--dry-run"], &["prune", "--json"], None);
    both(
        "repair",
        &["repair", "--dry-run"],
        &["repair", "--dry-run", "--json"],
        None,
    );
    assert_eq!(pinned, 16);
}

/// The validator itself: it must catch what it is there to catch.
#[test]
fn the_schema_check_refuses_unknown_fields_wrong_types_and_missing_ones() {
    let repo = TestRepo::new();
    let s = schema(&repo, "check");
    let good: Value = serde_json::json!({"schema": 1, "ports": [{"port": 9, "status": "invalid"}], "all_free": false});
    validate(&s, &s, &good, "$").unwrap();
    for bad in [
        serde_json::json!({"schema": 1, "ports": [], "all_free": false, "extra": 1}),
        serde_json::json!({"schema": 1, "ports": [{"port": "9", "status": "free"}], "all_free": true}),
        serde_json::json!({"schema": 1, "ports": [{"port": 9, "status": "gone"}], "all_free": true}),
        serde_json::json!({"schema": 1, "all_free": true}),
    ] {
        assert!(validate(&s, &s, &bad, "$").is_err(), "accepted {bad}");
    }
}

/// The commands that answer only in text: their output pinned too.
#[test]
fn commands_without_json_are_pinned_too() {
    let repo = TestRepo::new();
    repo.wp(["allocate", "--no-render"]).succeeds();
    let feat = repo.path("feat");
    repo.wp(["add", "--no-render", feat.to_str().unwrap()])
        .succeeds();
    let pin = |name: &str, args: &[&str]| {
        let out = repo.wp(args).output();
        assert!(out.0.status.success(), "{name}: {}", out.describe());
        let text = out.stdout() + &out.stderr();
        insta::assert_snapshot!(format!("text__{name}"), stable(&text, &repo, None));
    };
    pin("get", &["get", "web"]);
    pin("get-worktree", &["get", "db", "-w", "feat"]);
    pin("env-shell", &["env", "--format", "shell", "-w", "feat"]);
    pin(
        "exec",
        &[
            "exec",
            "-w",
            "feat",
            "--",
            "sh",
            "-c",
            "echo web=$WEB_PORT db=$DB_PORT",
        ],
    );
    pin("hosts", &["hosts"]);
    pin("hooks-install", &["hooks", "install"]);
    pin("hooks-uninstall", &["hooks", "uninstall"]);
    pin("proxy-stop", &["proxy", "stop"]);
}

/// Issue 25: the error's `details` are typed per code, and `--print-schema error` documents
/// each shape: errors of many codes, made by the real commands, fit it (closed objects: a key
/// the schema does not document fails), and a shape with an extra key does not.
#[test]
fn every_errors_details_fit_the_documented_shape_for_its_code() {
    let repo = TestRepo::new();
    let b = repo.base;
    let feat = repo.add_worktree("feat");
    repo.wp_in(&feat, ["allocate", "--json", "--no-render"])
        .succeeds();
    let listener = std::net::TcpListener::bind(("0.0.0.0", b + 5)).unwrap();
    let mut seen = Vec::new();
    let mut fails = |dir: &std::path::Path, args: &[&str], code: &str| {
        let out = repo.wp_in(dir, args).output();
        let json = out.json();
        assert_eq!(json["error"], code, "{args:?}: {json:#}");
        conforms(&repo, "error", &json);
        seen.push(json["details"].clone());
    };
    fails(
        &repo.root,
        &["allocate", "--json", "--port", &format!("web={}", b + 1)],
        "PORT_ALLOCATED",
    );
    fails(
        &repo.root,
        &["allocate", "--json", "--port", &format!("web={}", b + 5)],
        "PORT_IN_USE",
    );
    fails(
        &repo.root,
        &["allocate", "--json", "--port", "web=80"],
        "INVALID_PORT",
    );
    fails(
        &repo.root,
        &["allocate", "--json", "--port", "nope=auto"],
        "UNKNOWN_SERVICE",
    );
    fails(
        &repo.root,
        &["allocate", "--json", "nosuch"],
        "WORKTREE_NOT_FOUND",
    );
    fails(
        &repo.root,
        &["release", "--json", "feat", "--service", "nope"],
        "UNKNOWN_SERVICE",
    );
    fails(
        &repo.root,
        &["release", "--json", "--lease", "deadbeef"],
        "NOT_ALLOCATED",
    );
    fails(
        &repo.root,
        &[
            "lease",
            "--json",
            "--count",
            "9",
            "--range",
            &format!("{}-{}", b + 5, b + 6),
        ],
        "RANGE_EXHAUSTED",
    );
    fails(&repo.root, &["--bogus", "list", "--json"], "USAGE_ERROR");
    std::fs::write(
        feat.join(".worktree-ports/config.toml"),
        "[services.web]\nrange = [1, 2, 3]\n",
    )
    .unwrap();
    fails(&feat, &["allocate", "--json"], "CONFIG_INVALID");
    std::fs::write(
        feat.join(".worktree-ports/config.toml"),
        format!(
            "reserved = [{}]\n[services.web]\nrange = [{b}, {}]\n",
            b + 9,
            b + 19
        ),
    )
    .unwrap();
    fails(
        &feat,
        &["allocate", "--json", "--port", &format!("web={}", b + 9)],
        "SYSTEM_RESERVED",
    );
    std::fs::write(
        feat.join(".worktree-ports/config.toml"),
        format!("[services.web]\nrange = [{b}, {b}]\n"),
    )
    .unwrap();
    let third = repo.add_worktree("third");
    std::fs::create_dir_all(third.join(".worktree-ports")).unwrap();
    std::fs::write(
        third.join(".worktree-ports/config.toml"),
        format!("[services.web]\nrange = [{b}, {b}]\n"),
    )
    .unwrap();
    fails(&third, &["allocate", "--json"], "RANGE_EXHAUSTED");
    std::fs::create_dir_all(third.join(".worktree-ports/templates")).unwrap();
    std::fs::write(third.join(".worktree-ports/config.toml"), "").unwrap();
    std::fs::write(
        third.join(".worktree-ports/templates/.env.tera"),
        "{{ nope(\n",
    )
    .unwrap();
    fails(&third, &["render", "--json"], "TEMPLATE_ERROR");
    std::fs::write(repo.registry_path(), "{broken").unwrap();
    std::fs::write(repo.registry_path().with_extension("json.bak"), "{broken").unwrap();
    fails(&repo.root, &["allocate", "--json"], "REGISTRY_CORRUPT");
    drop(listener);
    // Every shape seen had its keys (a PORT_ALLOCATED names the holder, a PORT_IN_USE the pid).
    assert_eq!(seen[0]["worktree"], "feat", "{:#}", seen[0]);
    assert!(seen[1]["pid"].is_u64(), "{:#}", seen[1]);

    // A shape with a key no variant documents fits none.
    let s = schema(&repo, "error");
    let mut bad = serde_json::json!({
        "schema": 1, "success": false, "error": "PORT_ALLOCATED", "message": "m",
        "details": seen[0].clone(), "suggestions": []
    });
    validate(&s, &s, &bad, "$").unwrap();
    bad["details"]["surprise"] = serde_json::json!(1);
    assert!(validate(&s, &s, &bad, "$").is_err());
}

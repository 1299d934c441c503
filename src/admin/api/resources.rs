//! The configuration's resources: `/api/{kind}` and `/api/{kind}/{id}` for
//! listeners, certificates, upstreams, routes, consumers and global plugins;
//! upstream targets and consumer credentials as sub-resources; and the whole
//! document at `/api/config`.

use axum::body::Body;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::commit::commit;
use super::{preconditions, read_json, tagged, ApiError, Writer};
use crate::admin::auth::Caller;
use crate::admin::AdminState;
use crate::config::document::{etag, merge_patch, to_yaml, Kind, CONSUMERS, ROUTES, UPSTREAMS};

fn kind(section: &str) -> Result<Kind, ApiError> {
    Kind::find(section).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("`{section}` is not a resource; use listeners, certificates, upstreams, routes, consumers or plugins"),
        )
    })
}

fn current(state: &AdminState) -> (std::sync::Arc<Value>, u64) {
    let snap = state.shared.snapshot.load();
    (snap.raw.clone(), snap.revision)
}

/// 204 after a delete, with the revision that serves it.
fn no_content(revision: u64) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert("x-config-revision", HeaderValue::from(revision));
    resp
}

/// Pagination of a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Items to skip.
    #[serde(default)]
    pub offset: usize,
    /// Items to return (1 to 1000; default 100).
    pub limit: Option<usize>,
}

/// `GET /api/{kind}`: one page of items.
pub async fn list(
    State(state): State<AdminState>,
    _caller: Caller,
    Path(section): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let Query(page) = page.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("{e}; use `?offset=N&limit=M`"),
        )
    })?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "`limit` is from 1 to 1000",
        ));
    }
    let (doc, revision) = current(&state);
    let items = k.items(&doc);
    let data: Vec<Value> = items
        .iter()
        .skip(page.offset)
        .take(limit)
        .cloned()
        .collect();
    let end = page.offset.saturating_add(limit);
    let next = (end < items.len()).then(|| format!("/api/{section}?offset={end}&limit={limit}"));
    Ok(tagged(
        StatusCode::OK,
        json!({"data": data, "total": items.len(), "offset": page.offset, "limit": limit, "next": next}),
        None,
        revision,
    ))
}

/// `GET /api/{kind}/{id}`.
pub async fn get_one(
    State(state): State<AdminState>,
    _caller: Caller,
    Path((section, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let (doc, revision) = current(&state);
    let (_, item) = k
        .get(&doc, &id)
        .ok_or_else(|| ApiError::not_found(&format!("{section}/{id}")))?;
    Ok(tagged(
        StatusCode::OK,
        item.clone(),
        Some(etag(item)),
        revision,
    ))
}

/// The item as the document stores it: plugins are one-key mappings, so a
/// bare plugin configuration is wrapped in its name.
fn normalize(k: Kind, id: Option<&str>, body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body must be a JSON object",
        ));
    }
    if k.id_field.is_none() {
        if let Some(id) = id {
            let wrapped = body
                .as_object()
                .is_some_and(|m| m.len() == 1 && m.contains_key(id));
            return Ok(if wrapped { body } else { json!({ id: body }) });
        }
    }
    Ok(body)
}

/// `POST /api/{kind}`: creates an item; 409 when its name is taken.
pub async fn create(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path(section): Path<String>,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let item = normalize(k, None, read_json(&state, body).await?)?;
    let id = k.id_of(&item).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            match k.id_field {
                Some(f) => format!("the {section} item needs a `{f}`"),
                None => "a plugin is a mapping with one key, its name, like {\"cors\": {\"origins\": [\"*\"]}}".into(),
            },
        )
    })?;
    let change = |doc: &mut Value| {
        if k.get(doc, &id).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{section}/{id} already exists; PUT /api/{section}/{id} replaces it"),
            ));
        }
        let items = k.items_mut(doc);
        items.push(item.clone());
        Ok(Some((k.section, items.len() - 1)))
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "POST", &path, &change).await?;
    let mut resp = tagged(
        StatusCode::CREATED,
        item.clone(),
        Some(etag(&item)),
        done.revision,
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/{section}/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `PUT /api/{kind}/{id}`: creates or replaces the item.
pub async fn replace(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path((section, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let mut item = normalize(k, Some(&id), read_json(&state, body).await?)?;
    if let Some(f) = k.id_field {
        match item.get(f) {
            None => item[f] = json!(id),
            Some(v) if v.as_str() == Some(id.as_str()) => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "name_mismatch",
                    format!("the body's `{f}` differs from the URL's `{id}`; renaming is a create and a delete"),
                ))
            }
        }
    }
    let what = format!("{section}/{id}");
    let created = std::sync::atomic::AtomicBool::new(false);
    let change = |doc: &mut Value| {
        let existing = k.get(doc, &id).map(|(i, v)| (i, etag(v)));
        preconditions(&headers, existing.as_ref().map(|(_, t)| t.as_str()), &what)?;
        let items = k.items_mut(doc);
        let at = match existing {
            Some((i, _)) => {
                items[i] = item.clone();
                i
            }
            None => {
                created.store(true, std::sync::atomic::Ordering::Relaxed);
                items.push(item.clone());
                items.len() - 1
            }
        };
        Ok(Some((k.section, at)))
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "PUT", &path, &change).await?;
    let status = if created.into_inner() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(tagged(
        status,
        item.clone(),
        Some(etag(&item)),
        done.revision,
    ))
}

/// `PATCH /api/{kind}/{id}`: a JSON merge patch (RFC 7396) of the item.
pub async fn patch(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path((section, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let patch = read_json(&state, body).await?;
    let patch = normalize(k, Some(&id), patch)?;
    let what = format!("{section}/{id}");
    let result = std::sync::Mutex::new(Value::Null);
    let change = |doc: &mut Value| {
        let (i, old) = k.get(doc, &id).ok_or_else(|| ApiError::not_found(&what))?;
        preconditions(&headers, Some(&etag(old)), &what)?;
        let mut item = old.clone();
        merge_patch(&mut item, &patch);
        if k.id_of(&item).as_deref() != Some(id.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "name_mismatch",
                "a patch cannot rename the item",
            ));
        }
        k.items_mut(doc)[i] = item.clone();
        *result.lock().unwrap_or_else(|e| e.into_inner()) = item;
        Ok(Some((k.section, i)))
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "PATCH", &path, &change).await?;
    let item = result.into_inner().unwrap_or_else(|e| e.into_inner());
    let tag = etag(&item);
    Ok(tagged(StatusCode::OK, item, Some(tag), done.revision))
}

/// Routes that name `name` under the field `key` anywhere in them (an
/// upstream in their target or traffic splits, a listener in `listeners`).
fn routes_using(doc: &Value, key: &str, name: &str) -> Vec<String> {
    fn mentions(v: &Value, key: &str, name: &str) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| {
                (k == key
                    && (v.as_str() == Some(name)
                        || v.as_array()
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(name)))))
                    || mentions(v, key, name)
            }),
            Value::Array(a) => a.iter().any(|v| mentions(v, key, name)),
            _ => false,
        }
    }
    ROUTES
        .items(doc)
        .iter()
        .filter(|r| mentions(r, key, name))
        .map(|r| {
            r.get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// `DELETE /api/{kind}/{id}`: 409 while routes still use the upstream or listener.
pub async fn delete(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path((section, id)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let k = kind(&section)?;
    let what = format!("{section}/{id}");
    let change = |doc: &mut Value| {
        let (i, old) = k.get(doc, &id).ok_or_else(|| ApiError::not_found(&what))?;
        preconditions(&headers, Some(&etag(old)), &what)?;
        let field = match section.as_str() {
            "upstreams" => Some("upstream"),
            "listeners" => Some("listeners"),
            _ => None,
        };
        if let Some(field) = field {
            let users = routes_using(doc, field, &id);
            if !users.is_empty() {
                let mut e = ApiError::new(
                    StatusCode::CONFLICT,
                    "in_use",
                    format!(
                        "{what} is used by route(s) {}; change or delete them first",
                        users.join(", ")
                    ),
                );
                e.details = Some(Box::new(json!({"routes": users})));
                return Err(e);
            }
        }
        k.items_mut(doc).remove(i);
        Ok(None)
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "DELETE", &path, &change).await?;
    Ok(no_content(done.revision))
}

/// Output format of `/api/config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Format {
    /// `json` (default) or `yaml`.
    pub format: Option<String>,
}

/// `GET /api/config`: the whole document as written (`?format=yaml` for YAML).
pub async fn get_config(
    State(state): State<AdminState>,
    _caller: Caller,
    Query(f): Query<Format>,
) -> Result<Response, ApiError> {
    let (doc, revision) = current(&state);
    match f.format.as_deref() {
        None | Some("json") => Ok(tagged(
            StatusCode::OK,
            (*doc).clone(),
            Some(etag(&doc)),
            revision,
        )),
        Some("yaml") => {
            let mut resp =
                ([(header::CONTENT_TYPE, "application/yaml")], to_yaml(&doc)).into_response();
            if let Ok(t) = HeaderValue::from_str(&etag(&doc)) {
                resp.headers_mut().insert(header::ETAG, t);
            }
            resp.headers_mut()
                .insert("x-config-revision", HeaderValue::from(revision));
            Ok(resp)
        }
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("format `{other}`: use json or yaml"),
        )),
    }
}

/// `PUT /api/config`: replaces the whole document (what `portcullis config
/// apply` sends). With `If-Match`, only if nothing changed since it was read.
pub async fn put_config(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let new = read_json(&state, body).await?;
    if !new.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the document must be a JSON object",
        ));
    }
    let change = |doc: &mut Value| {
        preconditions(&headers, Some(&etag(doc)), "the configuration")?;
        // A node-local section (gateway, listeners, admin, observability,
        // cluster) the body leaves out is kept as it is, in every mode: a
        // Git repository of shared resources must not remove a node's
        // listeners, and `config diff` skips those sections alike.
        let mut next = new.clone();
        if let (Value::Object(n), Value::Object(cur)) = (&mut next, &*doc) {
            for section in crate::config::store::cluster::LOCAL_SECTIONS {
                if !n.contains_key(section) {
                    if let Some(v) = cur.get(section) {
                        n.insert(section.to_string(), v.clone());
                    }
                }
            }
        }
        *doc = next;
        Ok(None)
    };
    let done = commit(&state, &caller, "PUT", "/api/config", &change).await?;
    Ok(tagged(
        StatusCode::OK,
        json!({"revision": done.revision}),
        Some(etag(&done.doc)),
        done.revision,
    ))
}

/// `GET /api/upstreams/{name}/targets`.
pub async fn list_targets(
    State(state): State<AdminState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (doc, revision) = current(&state);
    let (_, u) = UPSTREAMS
        .get(&doc, &name)
        .ok_or_else(|| ApiError::not_found(&format!("upstreams/{name}")))?;
    let targets = u.get("targets").cloned().unwrap_or(json!([]));
    Ok(tagged(
        StatusCode::OK,
        json!({"data": targets}),
        Some(etag(u)),
        revision,
    ))
}

/// `POST /api/upstreams/{name}/targets`: adds `{"address": "host:port", "weight": N}`.
pub async fn add_target(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    body: Body,
) -> Result<Response, ApiError> {
    let target = read_json(&state, body).await?;
    let address = target
        .get("address")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "a target needs an `address` like \"10.0.0.5:8080\"",
            )
        })?;
    let k = UPSTREAMS;
    let change = |doc: &mut Value| {
        let (i, _) = k
            .get(doc, &name)
            .ok_or_else(|| ApiError::not_found(&format!("upstreams/{name}")))?;
        let u = &mut k.items_mut(doc)[i];
        if !u.get("targets").is_some_and(Value::is_array) {
            u["targets"] = json!([]);
        }
        let list = u["targets"]
            .as_array_mut()
            .ok_or_else(|| ApiError::not_found("targets"))?;
        if list
            .iter()
            .any(|t| t.get("address").and_then(Value::as_str) == Some(address.as_str()))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("upstreams/{name} already has target {address}"),
            ));
        }
        list.push(target.clone());
        Ok(Some(("upstreams", i)))
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "POST", &path, &change).await?;
    Ok(tagged(StatusCode::CREATED, target, None, done.revision))
}

/// `DELETE /api/upstreams/{name}/targets/{address}`.
pub async fn delete_target(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path((name, address)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let k = UPSTREAMS;
    let change = |doc: &mut Value| {
        let (i, _) = k
            .get(doc, &name)
            .ok_or_else(|| ApiError::not_found(&format!("upstreams/{name}")))?;
        let u = &mut k.items_mut(doc)[i];
        let list = u
            .get_mut("targets")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| ApiError::not_found("targets"))?;
        let before = list.len();
        list.retain(|t| t.get("address").and_then(Value::as_str) != Some(address.as_str()));
        if list.len() == before {
            return Err(ApiError::not_found(&format!(
                "target {address} of upstreams/{name}"
            )));
        }
        Ok(Some(("upstreams", i)))
    };
    let path = uri.path().to_string();
    let done = commit(&state, &caller, "DELETE", &path, &change).await?;
    Ok(no_content(done.revision))
}

/// `GET /api/consumers/{name}/credentials`.
pub async fn get_credentials(
    State(state): State<AdminState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (doc, revision) = current(&state);
    let (_, c) = CONSUMERS
        .get(&doc, &name)
        .ok_or_else(|| ApiError::not_found(&format!("consumers/{name}")))?;
    let creds = c.get("credentials").cloned().unwrap_or(json!({}));
    let tag = etag(&creds);
    Ok(tagged(StatusCode::OK, creds, Some(tag), revision))
}

async fn write_credentials(
    state: AdminState,
    caller: Caller,
    name: String,
    path: String,
    headers: HeaderMap,
    body: Value,
    merge: bool,
) -> Result<Response, ApiError> {
    if !body.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "credentials are a JSON object like {\"api_keys\": [\"...\"]}",
        ));
    }
    let k = CONSUMERS;
    let result = std::sync::Mutex::new(Value::Null);
    let change = |doc: &mut Value| {
        let (i, c) = k
            .get(doc, &name)
            .ok_or_else(|| ApiError::not_found(&format!("consumers/{name}")))?;
        let old = c.get("credentials").cloned().unwrap_or(json!({}));
        preconditions(
            &headers,
            Some(&etag(&old)),
            &format!("the credentials of consumers/{name}"),
        )?;
        let mut new = if merge { old } else { json!({}) };
        merge_patch(&mut new, &body);
        k.items_mut(doc)[i]["credentials"] = new.clone();
        *result.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(Some(("consumers", i)))
    };
    let method = if merge { "PATCH" } else { "PUT" };
    let done = commit(&state, &caller, method, &path, &change).await?;
    let creds = result.into_inner().unwrap_or_else(|e| e.into_inner());
    let tag = etag(&creds);
    Ok(tagged(StatusCode::OK, creds, Some(tag), done.revision))
}

/// `PUT /api/consumers/{name}/credentials`: replaces them.
pub async fn put_credentials(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&state, body).await?;
    write_credentials(
        state,
        caller,
        name,
        uri.path().to_string(),
        headers,
        body,
        false,
    )
    .await
}

/// `PATCH /api/consumers/{name}/credentials`: merges into them (RFC 7396).
pub async fn patch_credentials(
    State(state): State<AdminState>,
    Writer(caller): Writer,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_json(&state, body).await?;
    write_credentials(
        state,
        caller,
        name,
        uri.path().to_string(),
        headers,
        body,
        true,
    )
    .await
}

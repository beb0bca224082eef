//! The console's actions: signing in and out, and forms that call the admin API as the
//! signed-in caller and return to their page with the API's answer (a refusal names its rule).

use axum::{
    Form,
    extract::{Multipart, Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    Console, Refusal, Session, is_secure,
    pages::sign_in_form,
    view::{self, Flash},
};

/// The sign-in form.
#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
}

/// Whether a state-changing request comes from the console's own pages: its `Origin`, when the
/// browser sends one, names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The answer to a request from another site's page.
fn cross_site() -> Response {
    let page = view::bare(
        "Refused",
        maud::html! {
            p.flash.error role="alert" { "This request came from another site's page: the console takes forms only from its own pages." }
            p { a href="/console" { "Back to the console" } }
        },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// Signs in with a token: kept in the cookie if the API takes it.
pub(super) async fn sign_in(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let token = form.token.trim();
    let printable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    let answer = match printable {
        true => c.call(token, Method::GET, "/v1/me", None).await.map(|_| ()),
        false => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            text: "a token is letters, digits and punctuation, without spaces".into(),
        }),
    };
    match answer {
        Ok(()) => {
            let mut response = Redirect::to("/console").into_response();
            view::append_cookie(&mut response, &view::token_cookie(token, is_secure(&headers)));
            response
        }
        // 401 counts as a failed authentication for the listener's back-off.
        Err(refusal) => (refusal.status, sign_in_form(Some(&refusal.text))).into_response(),
    }
}

/// Signs out: forgets the cookie (the token itself still works where else it is used).
pub(super) async fn sign_out(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let Some(session) = c.session(&headers) else { return view::to_sign_in(is_secure(&headers)) };
    if !same_origin(&headers) || !csrf_ok(&session, &fields) {
        return cross_site();
    }
    view::to_sign_in(session.secure)
}

/// Whether the form carries the session's CSRF token (compared without an early exit).
fn csrf_ok(session: &Session, fields: &[(String, String)]) -> bool {
    let given = fields.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
    let expected = session.csrf.as_bytes();
    given.len() == expected.len()
        && given.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The page a form returns to: a console path, never another site.
fn back_of(fields: &[(String, String)]) -> String {
    let back = fields.iter().find(|(k, _)| k == "back").map_or("", |(_, v)| v.as_str());
    let safe = back.starts_with("/console")
        && !back.starts_with("//")
        && !back.contains(['\\', '\r', '\n'])
        && crate::console::is_console_path(back.split('?').next().unwrap_or(""));
    if safe { back.to_string() } else { "/console".to_string() }
}

/// Fields that are numbers in the API's bodies.
const NUMBERS: &[&str] = &["org", "unit", "parent", "limit", "seat_limit", "to_org", "key"];
/// Fields that are true or false.
const FLAGS: &[&str] = &["guest", "include", "public", "anonymous", "force"];

/// A form's fields as the API's JSON body: numbers and flags typed, empty fields left out (an
/// optional field not given), `expires_date` (YYYY-MM-DD) as `expires_ms` at its midnight UTC.
pub(super) fn body_of(fields: &[(String, String)]) -> Result<Map<String, Value>, String> {
    let mut body = Map::new();
    for (name, value) in fields {
        let value = value.trim();
        if matches!(name.as_str(), "csrf" | "back") || value.is_empty() {
            continue;
        }
        let (name, value) = if name == "expires_date" {
            ("expires_ms".to_string(), Value::from(midnight_ms(value)?))
        } else if NUMBERS.contains(&name.as_str()) {
            let number: u64 =
                value.parse().map_err(|_| format!("{name}: {value:?} is not a whole number"))?;
            (name.clone(), Value::from(number))
        } else if FLAGS.contains(&name.as_str()) {
            (name.clone(), Value::from(matches!(value, "true" | "on")))
        } else {
            (name.clone(), Value::from(value))
        };
        body.insert(name, value);
    }
    Ok(body)
}

/// Unix milliseconds at 00:00 UTC of a `YYYY-MM-DD` date.
fn midnight_ms(date: &str) -> Result<u64, String> {
    let bad = || format!("expires: {date:?} is not a date (YYYY-MM-DD)");
    let mut parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000).map_err(|_| bad())
}

/// The API route of each action.
fn route_of(action: &str) -> Option<&'static str> {
    Some(match action {
        "org" => "/v1/org",
        "invite" => "/v1/org/invite",
        "verify-domain" => "/v1/org/domains/verify",
        "peer-retry" => "/v1/peers/retry",
        _ => return None,
    })
}

/// Runs a form's action through the API and returns to its page with the answer.
pub(super) async fn act(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let Some(session) = c.session(&headers) else { return view::to_sign_in(is_secure(&headers)) };
    if !same_origin(&headers) || !csrf_ok(&session, &fields) {
        return expired_form(&session);
    }
    let back = back_of(&fields);
    let Some(route) = route_of(&action) else {
        return view::back_with(
            &back,
            &session,
            Flash { ok: false, text: format!("no action {action:?}") },
        );
    };
    let body = match body_of(&fields) {
        Ok(body) => body,
        Err(why) => return view::back_with(&back, &session, Flash { ok: false, text: why }),
    };
    let described = describe(&action, &body);
    match c.call(&session.token, Method::POST, route, Some(Value::Object(body))).await {
        Ok(answer) => {
            let text = match action.as_str() {
                "invite" => format!(
                    "Invited {}: code {} (shown this once), link {}, valid until {}.",
                    described,
                    answer["code"].as_str().unwrap_or("?"),
                    answer["link"].as_str().unwrap_or("?"),
                    view::date(answer["expires_ms"].as_u64().unwrap_or(0)),
                ),
                _ => format!("Done: {described}."),
            };
            view::back_with(&back, &session, Flash::ok(text))
        }
        Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
            view::to_sign_in(session.secure)
        }
        Err(refusal) => view::back_with(&back, &session, Flash::refused(&refusal)),
    }
}

/// What an action did, in words: the command and the names it took.
fn describe(action: &str, body: &Map<String, Value>) -> String {
    let what = match action {
        "org" => {
            body.get("command").and_then(|c| c.as_str()).unwrap_or("command").replace('_', " ")
        }
        "invite" => String::new(),
        other => other.replace('-', " "),
    };
    let names: Vec<String> =
        ["user", "name", "group", "sub", "domain", "to", "line", "key", "scope"]
            .into_iter()
            .filter_map(|k| body.get(k).map(|v| v.as_str().map_or(v.to_string(), str::to_string)))
            .collect();
    [what, names.join(", ")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The answer to a form without the session's CSRF token (a forged request, or a form from
/// before the hub restarted).
fn expired_form(session: &Session) -> Response {
    let page = view::bare(
        "Refused",
        maud::html! {
            p.flash.error role="alert" { "This form is not from your current console page (it may predate a restart of the hub, or come from another site). Nothing was done." }
            p { a href="/console" { "Back to the console" } }
        },
    );
    view::respond(StatusCode::FORBIDDEN, session, page)
}

/// Uploads a unit's logo through `PUT /v1/org/logo`, which checks it.
pub(super) async fn upload_logo(
    State(c): State<Console>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let Some(session) = c.session(&headers) else { return view::to_sign_in(is_secure(&headers)) };
    if !same_origin(&headers) {
        return expired_form(&session);
    }
    let mut fields = Vec::new();
    let mut file = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let bytes = match field.bytes().await {
                    Ok(bytes) => bytes,
                    Err(e) => return bad_upload(&session, &fields, &e.body_text()),
                };
                if name == "file" {
                    file = Some(bytes);
                } else {
                    fields.push((name, String::from_utf8_lossy(&bytes).into_owned()));
                }
            }
            Ok(None) => break,
            Err(e) => return bad_upload(&session, &fields, &e.body_text()),
        }
    }
    if !csrf_ok(&session, &fields) {
        return expired_form(&session);
    }
    let back = back_of(&fields);
    let field =
        |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string());
    let (Some(org), Some(unit)) = (field("org"), field("unit")) else {
        return view::back_with(
            &back,
            &session,
            Flash { ok: false, text: "the form names no organisation or unit".into() },
        );
    };
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return view::back_with(
            &back,
            &session,
            Flash { ok: false, text: "choose an image file to upload".into() },
        );
    };
    let (Ok(org), Ok(unit)) = (org.parse::<u64>(), unit.parse::<u64>()) else {
        return view::back_with(
            &back,
            &session,
            Flash { ok: false, text: "org and unit are numbers".into() },
        );
    };
    let uri = format!("/v1/org/logo?org={org}&unit={unit}");
    let sent =
        c.call_raw(&session.token, Method::PUT, &uri, Some((file.to_vec(), "image/png"))).await;
    match sent {
        Ok(_) => view::back_with(&back, &session, Flash::ok("Done: the logo is set.")),
        Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
            view::to_sign_in(session.secure)
        }
        Err(refusal) => view::back_with(&back, &session, Flash::refused(&refusal)),
    }
}

/// A multipart body that could not be read (too large, cut short).
fn bad_upload(session: &Session, fields: &[(String, String)], why: &str) -> Response {
    view::back_with(
        &back_of(fields),
        session,
        Flash { ok: false, text: format!("the upload could not be read: {why}") },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_form_becomes_the_apis_typed_body_without_its_empty_and_private_fields() {
        let body = body_of(&fields(&[
            ("csrf", "x"),
            ("back", "/console"),
            ("command", "delete_member"),
            ("org", "3"),
            ("user", " a@x.org "),
            ("reassign_to", ""),
            ("guest", "false"),
            ("guest", "on"),
            ("expires_date", "2030-01-01"),
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(body),
            serde_json::json!({"command": "delete_member", "org": 3, "user": "a@x.org",
                "guest": true, "expires_ms": 1_893_456_000_000u64})
        );
        assert_eq!(
            body_of(&fields(&[("org", "three")])).unwrap_err(),
            "org: \"three\" is not a whole number"
        );
        assert!(body_of(&fields(&[("expires_date", "2030-13-01")])).is_err());
    }

    #[test]
    fn a_form_returns_only_to_a_console_page() {
        assert_eq!(
            back_of(&fields(&[("back", "/console/org/1?status=active")])),
            "/console/org/1?status=active"
        );
        for bad in
            ["https://evil.example/", "//evil.example", "/consoleX", "/v1/org", "/console\\..", ""]
        {
            assert_eq!(back_of(&fields(&[("back", bad)])), "/console", "{bad}");
        }
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:7448".parse().unwrap());
        assert!(same_origin(&headers), "no Origin: the CSRF token decides");
        headers.insert(header::ORIGIN, "http://127.0.0.1:7448".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&headers));
    }
}

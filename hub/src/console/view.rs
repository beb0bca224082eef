//! What every page shares: the frame (header, navigation, the action's message), the signed-in
//! caller's standing, the one-time messages, and small pieces of forms.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::{FLASH_COOKIE, Refusal, Session, TOKEN_COOKIE};

/// What `GET /v1/me` answers.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Me {
    pub(super) actor: String,
    pub(super) user: Option<String>,
    pub(super) orgs: Vec<OrgPart>,
}

/// The caller's part in one organisation.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct OrgPart {
    pub(super) org: u64,
    pub(super) name: String,
    pub(super) role: Option<String>,
    pub(super) status: Option<String>,
    pub(super) manages_members: bool,
    pub(super) reads_log: bool,
    pub(super) group_admin_of: Vec<String>,
}

impl Me {
    pub(super) fn is_operator(&self) -> bool {
        self.actor == "operator"
    }

    pub(super) fn part(&self, org: u64) -> Option<&OrgPart> {
        self.orgs.iter().find(|o| o.org == org)
    }

    /// Whether the caller runs `org` (its owner or an admin, or the operator).
    pub(super) fn runs(&self, org: u64) -> bool {
        self.is_operator()
            || self.part(org).is_some_and(|p| matches!(p.role.as_deref(), Some("owner" | "admin")))
    }

    pub(super) fn owns(&self, org: u64) -> bool {
        self.is_operator() || self.part(org).is_some_and(|p| p.role.as_deref() == Some("owner"))
    }

    pub(super) fn who(&self) -> String {
        self.user.clone().unwrap_or_else(|| "the hub operator".into())
    }
}

/// A message an action leaves for the page it returns to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    pub(super) ok: bool,
    pub(super) text: String,
}

/// Most characters of a message kept in its cookie.
const MAX_FLASH: usize = 1500;

impl Flash {
    pub(super) fn ok(text: impl Into<String>) -> Self {
        Self { ok: true, text: text.into() }
    }

    pub(super) fn refused(refusal: &Refusal) -> Self {
        Self { ok: false, text: refusal.text.clone() }
    }

    /// As a cookie value: a kind letter and the text, in hex (cookie values take few
    /// characters as they are).
    fn encode(&self) -> String {
        let text: String = self.text.chars().take(MAX_FLASH).collect();
        let kind = if self.ok { "o" } else { "e" };
        format!("{kind}{}", crate::admin::hex(text.as_bytes()))
    }

    pub(super) fn decode(value: &str) -> Option<Self> {
        let (kind, hex) = value.split_at_checked(1)?;
        let ok = match kind {
            "o" => true,
            "e" => false,
            _ => return None,
        };
        if hex.len() % 2 != 0 || hex.len() > MAX_FLASH * 8 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        Some(Self { ok, text: String::from_utf8(bytes?).ok()? })
    }
}

/// Where the page is, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Home,
    Org(u64, OrgPage),
    Groups,
    Hub,
}

/// A page of an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OrgPage {
    Overview,
    Members,
    Approvals,
    Keys,
    Events,
}

/// A page in its frame.
pub(super) fn frame(
    title: &str,
    session: &Session,
    me: &Me,
    place: Place,
    content: Markup,
) -> Markup {
    let here = |p: Place| if p == place { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    p.brand { a href="/console" { "Switchboard" } " console" }
                    p.who { "Signed in as " strong { (me.who()) } }
                    form method="post" action="/console/sign-out" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                nav aria-label="Main" {
                    ul {
                        li { a href="/console" aria-current=[here(Place::Home)] { "Home" } }
                        @for part in &me.orgs {
                            li { a href={ "/console/org/" (part.org) } aria-current=[matches!(place, Place::Org(o, _) if o == part.org).then_some("page")] { (part.name) } }
                        }
                        li { a href="/console/groups" aria-current=[here(Place::Groups)] { "Groups" } }
                        @if me.is_operator() {
                            li { a href="/console/hub" aria-current=[here(Place::Hub)] { "Hub" } }
                        }
                    }
                }
                @if let Place::Org(org, page) = place {
                    (org_nav(me, org, page))
                }
                main id="main" {
                    @if let Some(flash) = &session.flash {
                        @if flash.ok {
                            p.flash.ok role="status" { (flash.text) }
                        } @else {
                            p.flash.error role="alert" { strong { "Refused: " } (flash.text) }
                        }
                    }
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The navigation between an organisation's pages: those the caller may use.
fn org_nav(me: &Me, org: u64, page: OrgPage) -> Markup {
    let part = me.part(org);
    // As the API decides: the operator runs the hub, not an organisation's membership, and
    // reads every organisation's log.
    let manages = part.is_some_and(|p| p.manages_members);
    let reads = me.is_operator() || part.is_some_and(|p| p.reads_log);
    let runs = me.runs(org);
    let pages = [
        (OrgPage::Overview, "Overview", "", true),
        (OrgPage::Members, "Members", "/members", manages),
        (OrgPage::Approvals, "Approvals", "/approvals", manages),
        (OrgPage::Keys, "Keys", "/keys", runs),
        (OrgPage::Events, "Event log", "/events", reads),
    ];
    html! {
        nav.sub aria-label="Organisation" {
            ul {
                @for (p, name, path, shown) in pages {
                    @if shown {
                        li { a href={ "/console/org/" (org) (path) } aria-current=[(p == page).then_some("page")] { (name) } }
                    }
                }
            }
        }
    }
}

/// The `head` of every page.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Switchboard console" }
            link rel="stylesheet" href="/console/console.css";
            // Named, so that a browser does not ask the listener for /favicon.ico without a
            // token (a failed authentication).
            link rel="icon" href="/console/icon.svg" type="image/svg+xml";
        }
    }
}

/// A page for someone not signed in.
pub(super) fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" .narrow { h1 { (title) } (content) }
            }
        }
    }
}

/// An answer with `status` and the page, clearing the message the page showed.
pub(super) fn respond(status: StatusCode, session: &Session, page: Markup) -> Response {
    let mut response = (status, page).into_response();
    if session.flash.is_some() {
        append_cookie(&mut response, &clear_cookie(FLASH_COOKIE, session.secure));
    }
    response
}

/// The refusal of a page's reading, in the frame.
pub(super) fn refused_page(
    title: &str,
    session: &Session,
    me: &Me,
    place: Place,
    refusal: &Refusal,
) -> Response {
    let content = html! {
        p.flash.error role="alert" { strong { "Refused: " } (refusal.text) }
    };
    respond(refusal.status, session, frame(title, session, me, place, content))
}

/// Back to `to` with a message.
pub(super) fn back_with(to: &str, session: &Session, flash: Flash) -> Response {
    let mut response = Redirect::to(to).into_response();
    let value = format!(
        "{FLASH_COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60{}",
        flash.encode(),
        if session.secure { "; Secure" } else { "" }
    );
    append_cookie(&mut response, &value);
    response
}

/// To the sign-in page, forgetting the token (it no longer works, or the user signed out).
pub(super) fn to_sign_in(secure: bool) -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    append_cookie(&mut response, &clear_cookie(TOKEN_COOKIE, secure));
    response
}

pub(super) fn token_cookie(token: &str, secure: bool) -> String {
    format!(
        "{TOKEN_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

fn clear_cookie(name: &str, secure: bool) -> String {
    format!(
        "{name}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

pub(super) fn append_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The hidden fields every action form carries: the CSRF token and the page to return to.
pub(super) fn hidden(session: &Session, back: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(session.csrf);
        input type="hidden" name="back" value=(back);
    }
}

/// A form of one button that runs org `command` with `fields`.
pub(super) fn button(
    session: &Session,
    back: &str,
    command: &str,
    fields: &[(&str, String)],
    label: &str,
    what: &str,
) -> Markup {
    html! {
        form.inline method="post" action="/console/do/org" {
            (hidden(session, back))
            input type="hidden" name="command" value=(command);
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" .danger[label.starts_with("Delete") || label.starts_with("Revoke")] aria-label={ (label) " " (what) } { (label) }
        }
    }
}

/// A date of Unix milliseconds, UTC, to the minute.
pub(super) fn date(ms: u64) -> String {
    let [y, mo, d, h, mi, _] = crate::backup::utc(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// The figures of the hub page: the metrics' series by name (families summed), and when they
/// were read.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(super) at: std::time::Instant,
    pub(super) series: std::collections::BTreeMap<String, f64>,
}

impl Figures {
    /// The figures of a Prometheus text exposition: each sample's value added to its name's.
    pub(super) fn parse(text: &str, at: std::time::Instant) -> Self {
        let mut series = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, rest)) = line.split_once(['{', ' ']) else { continue };
            let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value {
                *series.entry(name.to_string()).or_insert(0.0) += value;
            }
        }
        Self { at, series }
    }

    pub(super) fn get(&self, name: &str) -> f64 {
        self.series.get(name).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_its_cookie_and_a_forged_one_is_dropped() {
        let flash = Flash { ok: false, text: "not allowed: rule: ünïcode; and = signs".into() };
        assert_eq!(Flash::decode(&flash.encode()), Some(flash));
        assert_eq!(Flash::decode("x00"), None);
        assert_eq!(Flash::decode("o0"), None);
        assert_eq!(Flash::decode("ozz"), None);
        assert_eq!(Flash::decode("off"), None, "not UTF-8");
    }

    #[test]
    fn figures_sum_a_family_and_skip_comments() {
        let text = "# HELP x\nswitchboard_a_total{reason=\"p\"} 2\nswitchboard_a_total{reason=\"q\"} 3\nswitchboard_b 7\n";
        let figures = Figures::parse(text, std::time::Instant::now());
        assert_eq!(figures.get("switchboard_a_total"), 5.0);
        assert_eq!(figures.get("switchboard_b"), 7.0);
        assert_eq!(figures.get("switchboard_c"), 0.0);
    }
}

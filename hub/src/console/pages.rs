//! The console's pages: each reads the admin API as the signed-in caller and shows what it
//! answers, with the forms of the actions the caller may take.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Console, Refusal, Session, is_secure,
    view::{self, Figures, Me, OrgPage, Place, button, date, frame, hidden, respond},
};

/// The caller's session and standing, or the answer that sends them to sign in.
pub(super) async fn signed_in(c: &Console, headers: &HeaderMap) -> Result<(Session, Me), Response> {
    let Some(session) = c.session(headers) else {
        return Err(view::to_sign_in(is_secure(headers)));
    };
    match c.get(&session.token, "/v1/me").await {
        Ok(me) => Ok((session, me)),
        Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
            Err(view::to_sign_in(session.secure))
        }
        Err(refusal) => Err(failure(refusal.status, &refusal.text)),
    }
}

/// A page that could not be made at all.
fn failure(status: StatusCode, text: &str) -> Response {
    let page = view::bare(
        "Something went wrong",
        html! {
            p.flash.error role="alert" { (text) }
            p { a href="/console" { "Back to the console" } }
        },
    );
    (status, page).into_response()
}

/// Pages outside the console's.
pub(super) async fn not_found() -> Response {
    let page = view::bare(
        "No such page",
        html! {
            p { "The console has no page here." }
            p { a href="/console" { "Back to the console" } }
        },
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

/// The sign-in page (or the console, for someone signed in).
pub(super) async fn sign_in_page(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Some(session) = c.session(&headers)
        && c.call(&session.token, Method::GET, "/v1/me", None).await.is_ok()
    {
        return Redirect::to("/console").into_response();
    }
    (StatusCode::OK, sign_in_form(None)).into_response()
}

/// The sign-in form, with why the last attempt failed.
pub(super) fn sign_in_form(failed: Option<&str>) -> Markup {
    view::bare(
        "Sign in",
        html! {
            @if let Some(why) = failed {
                p.flash.error role="alert" id="sign-in-error" { strong { "Not signed in: " } (why) }
            }
            form method="post" action="/console/sign-in" {
                p {
                    label for="token" { "Token" }
                    input id="token" name="token" type="password" autocomplete="current-password"
                        required aria-describedby="token-help" aria-invalid=[failed.map(|_| "true")];
                }
                p id="token-help" .help {
                    "A user's token (" code { "hub token USER" } " or " code { "POST /v1/tokens" }
                    ") acts as that user, with their rights; the hub operator's token is in "
                    code { "<data_dir>/admin.token" } "."
                }
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

/// Home: the caller's organisations and what they may do in each.
pub(super) async fn home(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let content = html! {
        @if me.is_operator() {
            p { "You act as the hub's operator: every organisation, the hub's health and its peers ("
                a href="/console/hub" { "Hub" } ")." }
        }
        @if me.orgs.is_empty() {
            p { "You have no part in an organisation on this hub." }
        } @else {
            table {
                caption { "Organisations" }
                thead { tr { th scope="col" { "Organisation" } th scope="col" { "Your role" } th scope="col" { "Status" } th scope="col" { "Group admin of" } } }
                tbody {
                    @for part in &me.orgs {
                        tr {
                            td { a href={ "/console/org/" (part.org) } { (part.name) } }
                            td { (part.role.as_deref().unwrap_or(if me.is_operator() { "operator" } else { "none" })) }
                            td { (part.status.as_deref().unwrap_or("-")) }
                            td { (part.group_admin_of.join(", ")) }
                        }
                    }
                }
            }
        }
        p { a href="/console/groups" { "Groups you manage or belong to" } }
    };
    respond(StatusCode::OK, &session, frame("Home", &session, &me, Place::Home, content))
}

/// What the overview answers, as far as the pages use it.
#[derive(Debug, Clone, Deserialize)]
struct Overview {
    name: String,
    owner: String,
    pending_owner: Option<String>,
    admins: Vec<String>,
    seats_taken: u32,
    seat_limit: u32,
    domains: Vec<DomainRow>,
    units: Vec<UnitRow>,
    group_admins: Vec<GroupAdminRow>,
}

#[derive(Debug, Clone, Deserialize)]
struct DomainRow {
    domain: String,
    state: String,
    into: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct UnitRow {
    id: u64,
    parent: Option<u64>,
    name: String,
    line: String,
    include_sub_units: bool,
    rights: Vec<String>,
    logo: bool,
    logo_public: bool,
    members: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct GroupAdminRow {
    user: String,
    manages: Vec<String>,
}

async fn overview_of(c: &Console, session: &Session, org: u64) -> Result<Overview, Refusal> {
    c.get(&session.token, &format!("/v1/org/overview?org={org}")).await
}

/// An organisation at a glance.
pub(super) async fn overview(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(org): Path<u64>,
) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let place = Place::Org(org, OrgPage::Overview);
    let o = match overview_of(&c, &session, org).await {
        Ok(o) => o,
        Err(refusal) => return view::refused_page("Organisation", &session, &me, place, &refusal),
    };
    // The TXT record each claim needs (those who may add domains read it).
    let records: Vec<(String, String)> = c
        .call(&session.token, Method::GET, &format!("/v1/org/domains?org={org}"), None)
        .await
        .ok()
        .and_then(|v| v.get("claims").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|claim| {
            let domain = claim.get("domain")?.as_str()?.to_string();
            let name = claim.get("record").and_then(|v| v.as_str()).unwrap_or("");
            let value = claim.get("txt").and_then(|v| v.as_str()).unwrap_or("");
            Some((domain, format!("{name} TXT {value}")))
        })
        .collect();
    let back = format!("/console/org/{org}");
    let runs = me.runs(org);
    let owns = me.owns(org);
    let free = o.seat_limit.saturating_sub(o.seats_taken);
    let content = html! {
        section aria-labelledby="seats" {
            h2 id="seats" { "Seats" }
            p.figure { strong { (o.seats_taken) } " of " (o.seat_limit) " seats taken, " strong { (free) } " free." }
            @if me.is_operator() {
                form method="post" action="/console/do/org" {
                    (hidden(&session, &back))
                    input type="hidden" name="command" value="set_seat_limit";
                    input type="hidden" name="org" value=(org);
                    label for="limit" { "Seat limit" }
                    input id="limit" name="limit" type="number" min="0" value=(o.seat_limit) required;
                    button type="submit" { "Set the limit" }
                }
            }
        }
        section aria-labelledby="domains" {
            h2 id="domains" { "Domains" }
            table {
                thead { tr { th scope="col" { "Domain" } th scope="col" { "State" } th scope="col" { "Actions" } } }
                tbody {
                    @for d in &o.domains {
                        tr {
                            td { (d.domain) }
                            td {
                                @match d.state.as_str() {
                                    "verified" => span.ok { "verified" },
                                    "claimed" => {
                                        span.warn { "waiting for its DNS record" }
                                        @if let Some((_, record)) = records.iter().find(|(domain, _)| *domain == d.domain) {
                                            br; code { (record) }
                                        }
                                    },
                                    _ => { "merged into " (d.into.clone().unwrap_or_default()) },
                                }
                            }
                            td {
                                @if d.state == "claimed" && runs {
                                    form.inline method="post" action="/console/do/verify-domain" {
                                        (hidden(&session, &back))
                                        input type="hidden" name="org" value=(org);
                                        input type="hidden" name="domain" value=(d.domain);
                                        button type="submit" aria-label={ "Verify " (d.domain) } { "Verify" }
                                    }
                                    @if me.is_operator() {
                                        (button(&session, &back, "confirm_domain", &[("org", org.to_string()), ("domain", d.domain.clone())], "Confirm", &d.domain))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if runs {
                form method="post" action="/console/do/org" {
                    (hidden(&session, &back))
                    input type="hidden" name="command" value="add_domain";
                    input type="hidden" name="org" value=(org);
                    label for="domain" { "Add a domain" }
                    input id="domain" name="domain" type="text" required placeholder="example.org";
                    button type="submit" { "Add" }
                }
            }
        }
        section aria-labelledby="units" {
            h2 id="units" { "Units and lines" }
            (unit_tree(&session, &back, org, &o.units, None, runs))
            @if runs {
                form method="post" action="/console/do/org" .grid {
                    (hidden(&session, &back))
                    input type="hidden" name="command" value="create_unit";
                    input type="hidden" name="org" value=(org);
                    fieldset {
                        legend { "Create a unit" }
                        p { label for="parent" { "Within" }
                            select id="parent" name="parent" required {
                                @for u in &o.units { option value=(u.id) { (u.name) " (" (u.line) ")" } }
                            }
                        }
                        p { label for="unit-name" { "Name" } input id="unit-name" name="name" type="text" required; }
                        p { label for="unit-line" { "Line" } input id="unit-line" name="line" type="text" required placeholder="sales@example.org"; }
                        p { button type="submit" { "Create the unit" } }
                    }
                }
            }
        }
        section aria-labelledby="people" {
            h2 id="people" { "Owner and admins" }
            dl {
                dt { "Owner" } dd { (o.owner) }
                @if let Some(pending) = &o.pending_owner { dt { "Asked to take ownership" } dd { (pending) } }
                dt { "Admins (" (o.admins.len()) " of 5)" }
                dd {
                    @if o.admins.is_empty() { "none" }
                    ul.plain {
                        @for admin in &o.admins {
                            li { (admin) " "
                                @if owns { (button(&session, &back, "remove_admin", &[("org", org.to_string()), ("user", admin.clone())], "Remove", admin)) }
                            }
                        }
                    }
                }
            }
            @if owns {
                form method="post" action="/console/do/org" {
                    (hidden(&session, &back))
                    input type="hidden" name="command" value="name_admin";
                    input type="hidden" name="org" value=(org);
                    label for="admin" { "Name an admin" }
                    input id="admin" name="user" type="email" required placeholder="user@example.org";
                    button type="submit" { "Name admin" }
                }
            }
            h2 id="group-admins" { "Group admins" }
            @if o.group_admins.is_empty() { p { "none" } }
            ul.plain {
                @for ga in &o.group_admins {
                    li { (ga.user) ": " (ga.manages.join(", ")) " "
                        @if runs {
                            @for managed in &ga.manages {
                                @let (field, value) = managed_field(&o.units, managed);
                                (button(&session, &back, "remove_group_admin", &[("org", org.to_string()), ("user", ga.user.clone()), (field, value)], "Remove", &format!("{} as group admin of {managed}", ga.user)))
                            }
                        }
                    }
                }
            }
            @if runs {
                form method="post" action="/console/do/org" .grid {
                    (hidden(&session, &back))
                    input type="hidden" name="command" value="name_group_admin";
                    input type="hidden" name="org" value=(org);
                    fieldset {
                        legend { "Name a group admin" }
                        p { label for="ga-user" { "Member" } input id="ga-user" name="user" type="email" required; }
                        p { label for="ga-unit" { "Of the unit" }
                            select id="ga-unit" name="unit" {
                                option value="" { "(a group instead)" }
                                @for u in &o.units { option value=(u.id) { (u.name) } }
                            }
                        }
                        p { label for="ga-group" { "Or of the group" } input id="ga-group" name="group" type="text" placeholder="#name"; }
                        p { button type="submit" { "Name group admin" } }
                    }
                }
            }
        }
    };
    let title = format!("{} at a glance", o.name);
    respond(StatusCode::OK, &session, frame(&title, &session, &me, place, content))
}

/// The form field that names what a group admin looks after: a unit's id for a line, else the
/// group.
fn managed_field(units: &[UnitRow], managed: &str) -> (&'static str, String) {
    match units.iter().find(|u| u.line == managed) {
        Some(unit) => ("unit", unit.id.to_string()),
        None => ("group", managed.to_string()),
    }
}

/// The units under `parent` as nested lists.
fn unit_tree(
    session: &Session,
    back: &str,
    org: u64,
    units: &[UnitRow],
    parent: Option<u64>,
    runs: bool,
) -> Markup {
    let children: Vec<&UnitRow> = units.iter().filter(|u| u.parent == parent).collect();
    html! {
        @if !children.is_empty() {
            ul.tree {
                @for u in children {
                    li {
                        div.unit {
                            @if u.logo {
                                img src={ "/console/logo?unit=" (u.id) } alt={ "Logo of " (u.name) } width="48" height="48";
                            }
                            strong { (u.name) } " "
                            code { (u.line) }
                            " · " (u.members) " member" @if u.members != 1 { "s" }
                            @if u.include_sub_units { " · reaches its sub-units" }
                            @if !u.rights.is_empty() { " · rights: " (u.rights.join(", ")) }
                            @if u.logo { " · logo " (if u.logo_public { "public" } else { "for members" }) }
                        }
                        @if runs {
                            details {
                                summary { "Logo and settings of " (u.name) }
                                form method="post" action={ "/console/logo" } enctype="multipart/form-data" {
                                    (hidden(session, back))
                                    input type="hidden" name="org" value=(org);
                                    input type="hidden" name="unit" value=(u.id);
                                    label for={ "logo-" (u.id) } { "Logo (PNG or JPEG, at least 512 x 512 pixels, at most 2 MiB)" }
                                    input id={ "logo-" (u.id) } name="file" type="file" accept="image/png,image/jpeg" required;
                                    button type="submit" { "Upload the logo" }
                                }
                                @if u.logo {
                                    (button(session, back, "set_logo_public", &[("org", org.to_string()), ("unit", u.id.to_string()), ("public", (!u.logo_public).to_string())], if u.logo_public { "Show the logo to members only" } else { "Make the logo public" }, &u.name))
                                }
                                (button(session, back, "set_include_sub_units", &[("org", org.to_string()), ("unit", u.id.to_string()), ("include", (!u.include_sub_units).to_string())], if u.include_sub_units { "Stop reaching sub-units" } else { "Reach sub-units too" }, &u.name))
                            }
                        }
                        (unit_tree(session, back, org, units, Some(u.id), runs))
                    }
                }
            }
        }
    }
}

/// A member as the roster lists them.
#[derive(Debug, Clone, Deserialize)]
struct RosterEntry {
    user: String,
    status: String,
    role: String,
    owner: bool,
    admin: bool,
    unit: Option<String>,
    group_admin_of: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RosterInvitation {
    user: String,
    guest: bool,
    invited_by: String,
    expires_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Roster {
    seats_taken: u32,
    seat_limit: u32,
    members: Vec<RosterEntry>,
    invitations: Vec<RosterInvitation>,
}

/// The filters of the members page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MemberFilter {
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    unit: String,
}

async fn roster_of(c: &Console, session: &Session, org: u64) -> Result<Roster, Refusal> {
    c.get(&session.token, &format!("/v1/org/members?org={org}")).await
}

/// The members, filtered, with their actions, and the invitations.
pub(super) async fn members(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(org): Path<u64>,
    Query(filter): Query<MemberFilter>,
) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let place = Place::Org(org, OrgPage::Members);
    let roster = match roster_of(&c, &session, org).await {
        Ok(roster) => roster,
        Err(refusal) => return view::refused_page("Members", &session, &me, place, &refusal),
    };
    // The units, for the filters and the move and invite forms (if the caller may see them).
    let units = overview_of(&c, &session, org).await.map(|o| o.units).unwrap_or_default();
    let back = {
        let query = serde_urlencoded_pairs(&[
            ("status", &filter.status),
            ("type", &filter.kind),
            ("unit", &filter.unit),
        ]);
        format!("/console/org/{org}/members{query}")
    };
    let shown: Vec<&RosterEntry> = roster
        .members
        .iter()
        .filter(|m| filter.status.is_empty() || m.status == filter.status)
        .filter(|m| filter.kind.is_empty() || m.role == filter.kind)
        .filter(|m| {
            filter.unit.is_empty()
                || (filter.unit == "-" && m.unit.is_none())
                || m.unit.as_deref() == Some(filter.unit.as_str())
        })
        .collect();
    let content = html! {
        p.figure { (roster.seats_taken) " of " (roster.seat_limit) " seats taken." }
        form method="get" action={ "/console/org/" (org) "/members" } .filters role="search" aria-label="Filter members" {
            p { label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    @for (value, name) in [("", "any"), ("pending", "pending"), ("active", "active"), ("deactivated", "deactivated")] {
                        option value=(value) selected[filter.status == value] { (name) }
                    }
                }
            }
            p { label for="f-type" { "Type" }
                select id="f-type" name="type" {
                    @for (value, name) in [("", "any"), ("member", "member"), ("guest", "guest")] {
                        option value=(value) selected[filter.kind == value] { (name) }
                    }
                }
            }
            p { label for="f-unit" { "Unit" }
                select id="f-unit" name="unit" {
                    option value="" selected[filter.unit.is_empty()] { "any" }
                    option value="-" selected[filter.unit == "-"] { "none" }
                    @for u in &units { option value=(u.line) selected[filter.unit == u.line] { (u.name) } }
                }
            }
            p { button type="submit" { "Filter" } }
        }
        table.members {
            caption { (shown.len()) " of " (roster.members.len()) " members" }
            thead { tr { th scope="col" { "Member" } th scope="col" { "Status" } th scope="col" { "Type" } th scope="col" { "Unit" } th scope="col" { "Duties" } th scope="col" { "Actions" } } }
            tbody {
                @for m in &shown {
                    tr {
                        th scope="row" { (m.user) }
                        td data-label="Status" { span class=(m.status) { (m.status) } }
                        td data-label="Type" { (m.role) }
                        td data-label="Unit" { (m.unit.as_deref().unwrap_or("-")) }
                        td data-label="Duties" {
                            @if m.owner { "owner " } @if m.admin { "admin " }
                            @if !m.group_admin_of.is_empty() { "group admin of " (m.group_admin_of.join(", ")) }
                        }
                        td.actions { (member_actions(&session, &back, org, m, &units)) }
                    }
                }
            }
        }
        section aria-labelledby="invite" {
            h2 id="invite" { "Invite" }
            form method="post" action="/console/do/invite" .grid {
                (hidden(&session, &back))
                input type="hidden" name="org" value=(org);
                p { label for="i-user" { "Address" } input id="i-user" name="user" type="email" required placeholder="user@example.org"; }
                p { label for="i-unit" { "Unit" }
                    select id="i-unit" name="unit" {
                        option value="" { "(none yet)" }
                        @for u in &units { option value=(u.id) { (u.name) } }
                    }
                }
                p.check { input id="i-guest" name="guest" type="checkbox" value="true"; label for="i-guest" { "As a guest (takes no seat, answers whoever invited them)" } }
                p { button type="submit" { "Invite" } }
            }
            @if !roster.invitations.is_empty() {
                table {
                    caption { "Open invitations" }
                    thead { tr { th scope="col" { "Address" } th scope="col" { "As" } th scope="col" { "Invited by" } th scope="col" { "Expires" } th scope="col" { "Actions" } } }
                    tbody {
                        @for i in &roster.invitations {
                            tr {
                                td { (i.user) }
                                td { (if i.guest { "guest" } else { "member" }) }
                                td { (i.invited_by) }
                                td { (date(i.expires_ms)) }
                                td {
                                    form.inline method="post" action="/console/do/invite" {
                                        (hidden(&session, &back))
                                        input type="hidden" name="org" value=(org);
                                        input type="hidden" name="user" value=(i.user);
                                        input type="hidden" name="guest" value=(i.guest);
                                        button type="submit" aria-label={ "Send a new code to " (i.user) } { "Re-send" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, &session, frame("Members", &session, &me, place, content))
}

/// A query string of the non-empty pairs.
fn serde_urlencoded_pairs(pairs: &[(&str, &String)]) -> String {
    let kept: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect();
    if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) }
}

/// `text` percent-encoded for a query.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The actions a member's row offers, by status.
fn member_actions(
    session: &Session,
    back: &str,
    org: u64,
    m: &RosterEntry,
    units: &[UnitRow],
) -> Markup {
    let fields = [("org", org.to_string()), ("user", m.user.clone())];
    html! {
        @match m.status.as_str() {
            "pending" => {
                (button(session, back, "approve", &fields, "Approve", &m.user))
                (button(session, back, "deactivate", &fields, "Decline", &m.user))
            },
            "active" => {
                @if !m.owner {
                    (button(session, back, "deactivate", &fields, "Deactivate", &m.user))
                    @let guest = m.role != "guest";
                    (button(session, back, "change_member_type", &[("org", org.to_string()), ("user", m.user.clone()), ("guest", guest.to_string())], if guest { "Make guest" } else { "Make member" }, &m.user))
                }
                @if !units.is_empty() {
                    form.inline method="post" action="/console/do/org" {
                        (hidden(session, back))
                        input type="hidden" name="command" value=(if m.unit.is_some() { "move_member" } else { "assign" });
                        input type="hidden" name="org" value=(org);
                        input type="hidden" name="user" value=(m.user);
                        select name="unit" aria-label={ "Unit for " (m.user) } {
                            @for u in units { option value=(u.id) selected[m.unit.as_deref() == Some(u.line.as_str())] { (u.name) } }
                        }
                        button type="submit" aria-label={ "Move " (m.user) } { (if m.unit.is_some() { "Move" } else { "Assign" }) }
                    }
                }
            },
            _ => {
                (button(session, back, "reactivate", &fields, "Reactivate", &m.user))
                form.inline method="post" action="/console/do/org" {
                    (hidden(session, back))
                    input type="hidden" name="command" value="delete_member";
                    input type="hidden" name="org" value=(org);
                    input type="hidden" name="user" value=(m.user);
                    input type="email" name="reassign_to" placeholder="reassign to (optional)" aria-label={ "Who takes over from " (m.user) };
                    button type="submit" .danger aria-label={ "Delete " (m.user) } { "Delete" }
                }
            },
        }
    }
}

/// The registrations waiting for approval.
pub(super) async fn approvals(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(org): Path<u64>,
) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let place = Place::Org(org, OrgPage::Approvals);
    let roster = match roster_of(&c, &session, org).await {
        Ok(roster) => roster,
        Err(refusal) => return view::refused_page("Approvals", &session, &me, place, &refusal),
    };
    let back = format!("/console/org/{org}/approvals");
    let pending: Vec<&RosterEntry> =
        roster.members.iter().filter(|m| m.status == "pending").collect();
    let free = roster.seat_limit.saturating_sub(roster.seats_taken);
    let content = html! {
        p.figure { (pending.len()) " waiting; " (free) " seats free (a registration holds its seat while it waits)." }
        @if pending.is_empty() {
            p { "No registration waits for approval." }
        } @else {
            ul.plain.approvals {
                @for m in &pending {
                    li {
                        (m.user) " (" (m.role) ") "
                        (button(&session, &back, "approve", &[("org", org.to_string()), ("user", m.user.clone())], "Approve", &m.user))
                        (button(&session, &back, "deactivate", &[("org", org.to_string()), ("user", m.user.clone())], "Decline", &m.user))
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, &session, frame("Approvals", &session, &me, place, content))
}

#[derive(Debug, Clone, Deserialize)]
struct KeyRow {
    id: u64,
    org: u64,
    unit: u64,
    to_org: u64,
    expires_ms: u64,
    revoked: bool,
    groups: Vec<String>,
}

/// Keys issued by the organisation and received by it.
pub(super) async fn keys(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(org): Path<u64>,
) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let place = Place::Org(org, OrgPage::Keys);
    let keys: Vec<KeyRow> = match c.get(&session.token, "/v1/org/keys").await {
        Ok(keys) => keys,
        Err(refusal) => return view::refused_page("Keys", &session, &me, place, &refusal),
    };
    let units = overview_of(&c, &session, org).await.map(|o| o.units).unwrap_or_default();
    let name_of = |id: u64, unit: u64| {
        if id == org {
            units.iter().find(|u| u.id == unit).map_or(format!("unit {unit}"), |u| u.line.clone())
        } else {
            format!("unit {unit} of organisation {id}")
        }
    };
    let org_name = |id: u64| {
        me.part(id).map_or(format!("organisation {id}"), |p| format!("{} ({id})", p.name))
    };
    let now = crate::store::system_clock_ms();
    let state = |k: &KeyRow| {
        if k.revoked {
            "revoked"
        } else if k.expires_ms <= now {
            "expired"
        } else {
            "working"
        }
    };
    let back = format!("/console/org/{org}/keys");
    let issued: Vec<&KeyRow> = keys.iter().filter(|k| k.org == org).collect();
    let received: Vec<&KeyRow> = keys.iter().filter(|k| k.to_org == org).collect();
    let content = html! {
        section aria-labelledby="issued" {
            h2 id="issued" { "Issued" }
            @if issued.is_empty() { p { "No key issued." } } @else {
                table {
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Line" } th scope="col" { "To" } th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { "Handed to" } th scope="col" { "Actions" } } }
                    tbody {
                        @for k in &issued {
                            tr {
                                td { (k.id) } td { (name_of(k.org, k.unit)) } td { (org_name(k.to_org)) }
                                td { (date(k.expires_ms)) } td { (state(k)) } td { (k.groups.join(", ")) }
                                td { @if !k.revoked { (button(&session, &back, "revoke_key", &[("key", k.id.to_string())], "Revoke", &format!("key {}", k.id))) } }
                            }
                        }
                    }
                }
            }
            form method="post" action="/console/do/org" .grid {
                (hidden(&session, &back))
                input type="hidden" name="command" value="issue_key";
                input type="hidden" name="org" value=(org);
                fieldset {
                    legend { "Issue a key to another organisation" }
                    p { label for="k-unit" { "To the line of" }
                        select id="k-unit" name="unit" required {
                            @for u in &units { option value=(u.id) { (u.name) " (" (u.line) ")" } }
                        }
                    }
                    p { label for="k-to" { "Organisation (its number)" } input id="k-to" name="to_org" type="number" min="0" required; }
                    p { label for="k-exp" { "Expires on (default: in five years)" } input id="k-exp" name="expires_date" type="date"; }
                    p { button type="submit" { "Issue the key" } }
                }
            }
        }
        section aria-labelledby="received" {
            h2 id="received" { "Received" }
            @if received.is_empty() { p { "No key received." } } @else {
                table {
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Line" } th scope="col" { "From" } th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { "Handed to" } th scope="col" { "Hand to a group" } } }
                    tbody {
                        @for k in &received {
                            tr {
                                td { (k.id) } td { (name_of(k.org, k.unit)) } td { (org_name(k.org)) }
                                td { (date(k.expires_ms)) } td { (state(k)) } td { (k.groups.join(", ")) }
                                td {
                                    form.inline method="post" action="/console/do/org" {
                                        (hidden(&session, &back))
                                        input type="hidden" name="command" value="hand_key";
                                        input type="hidden" name="key" value=(k.id);
                                        input type="text" name="group" required placeholder="#group" aria-label={ "Group to hand key " (k.id) " to" };
                                        button type="submit" aria-label={ "Hand key " (k.id) } { "Hand" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, &session, frame("Keys", &session, &me, place, content))
}

/// The event log's filters and position.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EventFilter {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    /// Show the events before this position (default: the newest).
    before: Option<u64>,
}

/// Events one page shows at most.
const EVENTS_PER_PAGE: usize = 100;
/// Pages of the API one console page reads at most.
const EVENT_PAGES_READ: usize = 20;

/// What an event is, for the filter: the command of an applied one, else its kind.
fn event_kind(event: &Value) -> String {
    let change = &event["change"];
    match change["kind"].as_str() {
        Some("applied") => change["data"]["command"].as_str().unwrap_or("applied").to_string(),
        Some(kind) => kind.to_string(),
        None => "unknown".into(),
    }
}

/// Whether `event` concerns `org`.
fn concerns(event: &Value, org: u64) -> bool {
    let data = &event["change"]["data"];
    let also = event["also"].as_array().is_some_and(|a| a.iter().any(|v| v.as_u64() == Some(org)));
    also || data["org"].as_u64() == Some(org)
        || data["org"]["id"].as_u64() == Some(org)
        || data["to_org"].as_u64() == Some(org)
}

/// The organisation's event log, searched and filtered.
pub(super) async fn events(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(org): Path<u64>,
    Query(filter): Query<EventFilter>,
) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let place = Place::Org(org, OrgPage::Events);
    if !(me.is_operator() || me.part(org).is_some_and(|p| p.reads_log)) {
        let refusal = Refusal {
            status: StatusCode::FORBIDDEN,
            text: "not allowed: the organisation's event log is read by those who hold the right to read it (its owner and admins)".into(),
        };
        return view::refused_page("Event log", &session, &me, place, &refusal);
    }
    let needle = filter.q.trim().to_lowercase();
    // Newest first: pages of the API walking back from `before`.
    let (mut shown, mut before, mut more) = (Vec::new(), filter.before, true);
    'read: for _ in 0..EVENT_PAGES_READ {
        let uri = match before {
            Some(before) => format!("/v1/org/events?newest=true&before={before}&limit=1000"),
            None => "/v1/org/events?newest=true&limit=1000".to_string(),
        };
        let page = match c.call(&session.token, Method::GET, &uri, None).await {
            Ok(page) => page,
            Err(refusal) => return view::refused_page("Event log", &session, &me, place, &refusal),
        };
        for logged in page["events"].as_array().into_iter().flatten() {
            let (Some(seq), event) = (logged["seq"].as_u64(), &logged["event"]) else { continue };
            let kind = event_kind(event);
            if concerns(event, org)
                && (filter.kind.is_empty() || kind == filter.kind)
                && (needle.is_empty() || event.to_string().to_lowercase().contains(&needle))
            {
                shown.push((seq, event.clone(), kind));
                if shown.len() == EVENTS_PER_PAGE {
                    // The next page starts below the last one shown.
                    before = Some(seq);
                    more = true;
                    break 'read;
                }
            }
        }
        more = page["more"].as_bool().unwrap_or(false);
        before = page["next_after"].as_u64();
        if !more {
            break;
        }
    }
    const KINDS: &[&str] = &[
        "org_created",
        "unit_created",
        "registered",
        "approve",
        "invite",
        "accept_invitation",
        "add_member",
        "assign",
        "move_member",
        "change_member_type",
        "deactivate",
        "member_deactivated",
        "reactivate",
        "member_deleted",
        "name_admin",
        "remove_admin",
        "name_group_admin",
        "remove_group_admin",
        "create_group",
        "add_group_member",
        "remove_group_member",
        "add_subgroup",
        "set_group_scope",
        "delete_group",
        "key_issued",
        "hand_key",
        "revoke_key",
        "key_used",
        "key_use_refused",
        "add_domain",
        "confirm_domain",
        "set_logo",
        "set_seat_limit",
        "transfer_ownership",
        "accept_ownership",
    ];
    let next = {
        let before = before.map(|b| b.to_string()).unwrap_or_default();
        serde_urlencoded_pairs(&[("q", &filter.q), ("kind", &filter.kind), ("before", &before)])
    };
    let content = html! {
        form method="get" action={ "/console/org/" (org) "/events" } .filters role="search" aria-label="Search the event log" {
            p { label for="q" { "Search" } input id="q" name="q" type="search" value=(filter.q); }
            p { label for="kind" { "What" }
                select id="kind" name="kind" {
                    option value="" selected[filter.kind.is_empty()] { "anything" }
                    @for kind in KINDS { option value=(kind) selected[filter.kind == *kind] { (kind.replace('_', " ")) } }
                }
            }
            p { button type="submit" { "Search" } }
        }
        @if shown.is_empty() {
            p { "No event matches." }
        } @else {
            table.events {
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Details" } } }
                tbody {
                    @for (seq, event, kind) in &shown {
                        tr {
                            td { (seq) }
                            td { (date(event["at_ms"].as_u64().unwrap_or(0))) }
                            td { (actor_name(&event["actor"])) }
                            td { (kind.replace('_', " ")) }
                            td { code { (details(event)) } }
                        }
                    }
                }
            }
        }
        @if more {
            p { a href={ "/console/org/" (org) "/events" (next) } rel="next" { "Older events" } }
        }
    };
    respond(StatusCode::OK, &session, frame("Event log", &session, &me, place, content))
}

fn actor_name(actor: &Value) -> String {
    match actor {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("user").and_then(|u| u.as_str()).unwrap_or("?").to_string(),
        _ => "?".into(),
    }
}

/// An event's data in short: its fields but the command's name, large objects summarised.
fn details(event: &Value) -> String {
    let data = &event["change"]["data"];
    match data {
        Value::Object(fields) => fields
            .iter()
            .filter(|(k, _)| *k != "command" && *k != "code_hash")
            .map(|(k, v)| match v {
                Value::Number(n) if k.ends_with("_ms") => {
                    format!("{}: {}", k.trim_end_matches("_ms"), date(n.as_u64().unwrap_or(0)))
                }
                Value::String(s) => format!("{k}: {s}"),
                Value::Object(o) => format!(
                    "{k}: {}",
                    o.get("name").or(o.get("address")).and_then(|n| n.as_str()).unwrap_or("…")
                ),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Deserialize)]
struct GroupRow {
    address: String,
    owner: String,
    org: Option<u64>,
    scope: String,
    anonymous: bool,
    members: Option<Vec<String>>,
    subgroups: Vec<String>,
    manages: bool,
    group_admin: bool,
}

const SCOPES: &[&str] = &["owner", "group", "account", "provider", "server", "public"];

/// The groups the caller may see, with what they may do to each.
pub(super) async fn groups(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let groups: Vec<GroupRow> = match c.get(&session.token, "/v1/org/groups").await {
        Ok(groups) => groups,
        Err(refusal) => {
            return view::refused_page("Groups", &session, &me, Place::Groups, &refusal);
        }
    };
    let back = "/console/groups";
    let org_name = |id: Option<u64>| match id {
        None => "-".to_string(),
        Some(id) => me.part(id).map_or(format!("organisation {id}"), |p| p.name.clone()),
    };
    let content = html! {
        @if groups.is_empty() { p { "You manage and belong to no group." } }
        @for g in &groups {
            section.group aria-label={ "Group " (g.address) } {
                h2 { (g.address) }
                dl {
                    dt { "Owner" } dd { (g.owner) }
                    dt { "Organisation" } dd { (org_name(g.org)) }
                    dt { "Who may address it" } dd { (g.scope) }
                    dt { "Anonymous" } dd { (if g.anonymous { "yes: members receive, cannot send to it, cannot see each other" } else { "no" }) }
                    dt { "Subgroups" } dd { @if g.subgroups.is_empty() { "none" } (g.subgroups.join(", ")) }
                    dt { "Members" }
                    dd {
                        @match &g.members {
                            None => { em { "hidden: an anonymous group's members are shown only to those who manage it" } },
                            Some(members) => {
                                @if members.is_empty() { "none" }
                                ul.plain {
                                    @for m in members {
                                        li { (m) " "
                                            @if g.manages || g.group_admin {
                                                (button(&session, back, "remove_group_member", &[("group", g.address.clone()), ("user", m.clone())], "Remove", &format!("{m} from {}", g.address)))
                                            }
                                        }
                                    }
                                }
                            },
                        }
                    }
                }
                @if g.manages || g.group_admin {
                    form method="post" action="/console/do/org" {
                        (hidden(&session, back))
                        input type="hidden" name="command" value="add_group_member";
                        input type="hidden" name="group" value=(g.address);
                        label for={ "add-" (g.address) } { "Add a member to " (g.address) }
                        input id={ "add-" (g.address) } name="user" type="email" required;
                        button type="submit" { "Add" }
                    }
                }
                @if g.manages {
                    form method="post" action="/console/do/org" {
                        (hidden(&session, back))
                        input type="hidden" name="command" value="add_subgroup";
                        input type="hidden" name="group" value=(g.address);
                        label for={ "sub-" (g.address) } { "Add a subgroup to " (g.address) }
                        input id={ "sub-" (g.address) } name="sub" type="text" required placeholder="#name";
                        button type="submit" { "Add subgroup" }
                    }
                    form method="post" action="/console/do/org" {
                        (hidden(&session, back))
                        input type="hidden" name="command" value="set_group_scope";
                        input type="hidden" name="group" value=(g.address);
                        label for={ "scope-" (g.address) } { "Who may address " (g.address) }
                        select id={ "scope-" (g.address) } name="scope" {
                            @for s in SCOPES { option value=(s) selected[g.scope == *s] { (s) } }
                        }
                        button type="submit" { "Set the scope" }
                    }
                    // A second step, without a script: the button is behind a disclosure.
                    details {
                        summary { "Delete " (g.address) "…" }
                        p { "Its members stop receiving what is sent to it, and its address is free again." }
                        (button(&session, back, "delete_group", &[("group", g.address.clone())], "Delete for good", &g.address))
                    }
                }
            }
        }
        section aria-labelledby="create-group" {
            h2 id="create-group" { "Create a group" }
            form method="post" action="/console/do/org" .grid {
                (hidden(&session, back))
                input type="hidden" name="command" value="create_group";
                p { label for="g-name" { "Address" } input id="g-name" name="name" type="text" required placeholder="#team"; }
                p { label for="g-owner" { "Owner" } input id="g-owner" name="owner" type="email" value=(me.user.clone().unwrap_or_default()) required; }
                p { label for="g-org" { "Organisation" }
                    select id="g-org" name="org" {
                        option value="" { "(none)" }
                        @for part in &me.orgs { option value=(part.org) { (part.name) } }
                    }
                }
                p { label for="g-scope" { "Who may address it" }
                    select id="g-scope" name="scope" { @for s in SCOPES { option value=(s) { (s) } } }
                }
                p.check { input id="g-anon" name="anonymous" type="checkbox" value="true"; label for="g-anon" { "Anonymous (members only receive and cannot see each other)" } }
                p { button type="submit" { "Create the group" } }
            }
        }
    };
    respond(StatusCode::OK, &session, frame("Groups", &session, &me, Place::Groups, content))
}

/// The operator's page: the hub's health from the metrics' own figures, the organisations and
/// their seats, the peers.
pub(super) async fn hub(State(c): State<Console>, headers: HeaderMap) -> Response {
    let (session, me) = match signed_in(&c, &headers).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if !me.is_operator() {
        let refusal = Refusal {
            status: StatusCode::FORBIDDEN,
            text: "not allowed: the hub's page is the hub operator's (sign in with the operator token)".into(),
        };
        return view::refused_page("Hub", &session, &me, Place::Hub, &refusal);
    }
    let now = std::time::Instant::now();
    let figures = Figures::parse(&crate::metrics::render(&c.hub).await, now);
    let previous = c.last_figures.lock().expect("console figures lock").replace(figures.clone());
    let rate = |name: &str| -> Option<f64> {
        let previous = previous.as_ref()?;
        let secs = figures.at.duration_since(previous.at).as_secs_f64();
        (secs >= 1.0).then(|| (figures.get(name) - previous.get(name)).max(0.0) / secs)
    };
    let since = previous.as_ref().map(|p| figures.at.duration_since(p.at).as_secs());
    let peers: Vec<Value> = c
        .call(&session.token, Method::GET, "/v1/peers", None)
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut orgs = Vec::new();
    for part in me.orgs.iter().take(200) {
        if let Ok(o) = overview_of(&c, &session, part.org).await {
            orgs.push((part.org, o));
        }
    }
    let back = "/console/hub";
    let health: [(&str, &str, bool); 9] = [
        ("Devices connected", "switchboard_devices_connected", false),
        ("Device sessions", "switchboard_sessions", false),
        ("QUIC connections", "switchboard_connections", false),
        ("Sends accepted", "switchboard_sends_accepted_total", true),
        ("Sends rejected", "switchboard_sends_rejected_total", true),
        ("Deliveries", "switchboard_deliveries_total", true),
        ("Acknowledgements", "switchboard_acks_total", true),
        ("Messages held (backlog)", "switchboard_store_messages_held", false),
        ("Messages queued for peers", "switchboard_peer_queued_messages", false),
    ];
    let content = html! {
        section aria-labelledby="health" {
            h2 id="health" { "Health" }
            p.help { "The figures of " code { "/metrics" } ", read now; rates over the "
                @match since { Some(s) => { (s) " s since this page was last shown" }, None => "interval to the next showing of this page" } "." }
            table.figures {
                thead { tr { th scope="col" { "Figure" } th scope="col" { "Now" } th scope="col" { "Per second" } } }
                tbody {
                    @for (name, series, counter) in health {
                        tr {
                            th scope="row" { (name) }
                            td { (figures.get(series) as u64) }
                            td { @if counter { @match rate(series) { Some(r) => { (format!("{r:.1}")) }, None => "-" } } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="orgs" {
            h2 id="orgs" { "Organisations" }
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { "Name" } th scope="col" { "Owner" } th scope="col" { "Seats" } th scope="col" { "Domains" } } }
                tbody {
                    @for (id, o) in &orgs {
                        tr {
                            td { (id) }
                            td { a href={ "/console/org/" (id) } { (o.name) } }
                            td { (o.owner) }
                            td { (o.seats_taken) " / " (o.seat_limit) }
                            td { (o.domains.iter().map(|d| format!("{} ({})", d.domain, d.state)).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
            form method="post" action="/console/do/org" .grid {
                (hidden(&session, back))
                input type="hidden" name="command" value="create_org";
                fieldset {
                    legend { "Create an organisation" }
                    p { label for="o-name" { "Name" } input id="o-name" name="name" type="text" required; }
                    p { label for="o-owner" { "Owner" } input id="o-owner" name="owner" type="email" required; }
                    p { label for="o-domain" { "Domain" } input id="o-domain" name="domain" type="text" required placeholder="example.org"; }
                    p { label for="o-line" { "Main line" } input id="o-line" name="line" type="text" required placeholder="office@example.org"; }
                    p { label for="o-seats" { "Seats (default: the hub's)" } input id="o-seats" name="seat_limit" type="number" min="0"; }
                    p { button type="submit" { "Create" } }
                }
            }
        }
        section aria-labelledby="peers" {
            h2 id="peers" { "Peers" }
            @if peers.is_empty() { p { "No peer hub is configured." } } @else {
                table {
                    thead { tr { th scope="col" { "Peer" } th scope="col" { "Address" } th scope="col" { "Link" } th scope="col" { "Queued" } th scope="col" { "Last error" } th scope="col" { "Actions" } } }
                    tbody {
                        @for p in &peers {
                            @let name = p["name"].as_str().unwrap_or("?").to_string();
                            tr {
                                td { (name) }
                                td { (p["address"].as_str().unwrap_or("")) }
                                td { (p["state"].as_str().unwrap_or("")) }
                                td { (p["queued"].as_u64().unwrap_or(0)) }
                                td { (p["last_error"].as_str().unwrap_or("")) }
                                td {
                                    form.inline method="post" action="/console/do/peer-retry" {
                                        (hidden(&session, back))
                                        input type="hidden" name="name" value=(name);
                                        button type="submit" aria-label={ "Retry " (name) " now" } { "Retry now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, &session, frame("Hub", &session, &me, Place::Hub, content))
}

/// The query of the logo route.
#[derive(Debug, Deserialize)]
pub(super) struct LogoQuery {
    unit: u64,
}

/// A unit's logo, for those the API shows it to.
pub(super) async fn logo(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<LogoQuery>,
) -> Response {
    let Some(session) = c.session(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let uri = format!("/v1/org/logo?unit={}", query.unit);
    match c.call_raw(&session.token, Method::GET, &uri, None).await {
        Ok((_, content_type, bytes)) => {
            let content_type = match content_type.as_str() {
                "image/png" | "image/jpeg" => content_type,
                _ => "application/octet-stream".into(),
            };
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Err(refusal) => (refusal.status, refusal.text).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_concerns_its_org_the_orgs_it_names_and_no_other() {
        let created =
            serde_json::json!({"change": {"kind": "org_created", "data": {"org": {"id": 3}}}});
        let key = serde_json::json!({"change": {"kind": "key_issued", "data": {"org": 1, "to_org": 2}}, "also": [2]});
        let applied = serde_json::json!({"change": {"kind": "applied", "data": {"command": "approve", "org": 4}}});
        assert!(concerns(&created, 3) && !concerns(&created, 1));
        assert!(concerns(&key, 1) && concerns(&key, 2) && !concerns(&key, 3));
        assert!(concerns(&applied, 4) && !concerns(&applied, 3));
        assert_eq!(event_kind(&applied), "approve");
        assert_eq!(event_kind(&key), "key_issued");
    }

    #[test]
    fn a_query_keeps_only_the_filters_given_and_encodes_them() {
        let (a, b, c) = ("active".to_string(), String::new(), "sales@x.org".to_string());
        assert_eq!(
            serde_urlencoded_pairs(&[("status", &a), ("type", &b), ("unit", &c)]),
            "?status=active&unit=sales%40x.org"
        );
        assert_eq!(serde_urlencoded_pairs(&[("status", &b)]), "");
    }
}

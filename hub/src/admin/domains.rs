//! Proving a domain (`/v1/org/domains`): an admin claims a domain with `add_domain`; the hub
//! answers the TXT record to publish at `_switchboard.<domain>`; once it is published,
//! `POST /v1/org/domains/verify` looks it up (with the servers of `[org] dns_servers`, else the
//! system's resolver) and proves the domain for the organisation. The operator may instead
//! confirm a claim with the `confirm_domain` command.

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use hickory_resolver::{
    Resolver, TokioResolver,
    config::{NameServerConfig, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, ErrorBody, auth::actor},
    org::{Actor, Command, OrgId, OrgState, Right, ServiceError},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DomainsQuery {
    /// The organisation.
    #[param(value_type = u64)]
    org: OrgId,
}

/// A domain claimed and not proven yet, and how to prove it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Claim {
    domain: String,
    /// When it was claimed, Unix milliseconds.
    claimed_ms: u64,
    /// Where the TXT record goes: `_switchboard.<domain>`.
    record: String,
    /// The text it must hold.
    txt: String,
}

/// An organisation's domains.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Domains {
    /// Proven domains.
    domains: std::collections::BTreeSet<String>,
    /// Domains merged into another: alias to the domain that holds it now.
    merged: std::collections::BTreeMap<String, String>,
    claims: Vec<Claim>,
}

/// The organisation's proven domains, its claims, and for each claim the TXT record that
/// proves it (its admins, the operator).
#[utoipa::path(get, path = "/v1/org/domains", tag = "org", params(DomainsQuery), responses(
    (status = 200, description = "the domains", body = Domains),
    (status = 403, description = "not an admin of the organisation", body = ErrorBody),
    (status = 404, description = "no such organisation", body = ErrorBody),
))]
pub(super) async fn list_domains(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DomainsQuery>,
) -> Result<Json<Domains>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    let org = require_domain_admin(&snapshot, &actor, query.org)?;
    let claims: Vec<_> = org
        .claims
        .iter()
        .map(|(domain, claimed_ms)| Claim {
            domain: domain.clone(),
            claimed_ms: *claimed_ms,
            record: format!("_switchboard.{domain}"),
            txt: OrgState::domain_token(org.id, domain),
        })
        .collect();
    Ok(Json(Domains { domains: org.domains.clone(), merged: org.merged.clone(), claims }))
}

/// A claimed domain to prove.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    #[schema(value_type = u64)]
    org: OrgId,
    domain: String,
}

/// Looks up the claim's TXT record and, if it holds the organisation's text, proves the
/// domain (the event's actor is the hub).
#[utoipa::path(post, path = "/v1/org/domains/verify", tag = "org", request_body = VerifyBody, responses(
    (status = 200, description = "the event: the domain proven", body = crate::org::Event),
    (status = 403, description = "not an admin of the organisation", body = ErrorBody),
    (status = 404, description = "no such organisation, or the domain is not claimed", body = ErrorBody),
    (status = 409, description = "the TXT record is missing or holds another text", body = ErrorBody),
))]
pub(super) async fn verify_domain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<VerifyBody>,
) -> Result<Json<crate::org::Event>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let domain = body.domain.trim().to_ascii_lowercase();
    let expected = {
        let snapshot = state.hub.org().snapshot();
        let org = require_domain_admin(&snapshot, &actor, body.org)?;
        if !org.claims.contains_key(&domain) {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{domain} is not claimed by the organisation; add it first"),
            ));
        }
        OrgState::domain_token(org.id, &domain)
    };
    let found =
        txt_records(&state.hub.config().org.dns_servers, &format!("_switchboard.{domain}."))
            .await
            .map_err(|why| {
                ApiError(
                    StatusCode::CONFLICT,
                    format!("no TXT record at _switchboard.{domain} could be read: {why}"),
                )
            })?;
    if !found.iter().any(|text| text.trim() == expected) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("_switchboard.{domain} does not hold {expected:?} (found {found:?})"),
        ));
    }
    let command = Command::ConfirmDomain { org: body.org, domain };
    Ok(Json(state.hub.org_execute(&Actor::Hub, command).await?))
}

/// Refuses with 403 unless `actor` manages the domains of `org` (holds the right to manage
/// units there).
fn require_domain_admin<'s>(
    snapshot: &'s OrgState,
    actor: &Actor,
    org: OrgId,
) -> Result<&'s crate::org::Org, ApiError> {
    let o = snapshot.org(org).ok_or_else(|| {
        ApiError::from(ServiceError::Refused(crate::org::OrgError::UnknownOrg(org)))
    })?;
    if snapshot.holds(o, actor, Right::ManageUnits) || *actor == Actor::Operator {
        Ok(o)
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "not allowed: rule: admins manage the organisation's domains".into(),
        ))
    }
}

/// The texts of the TXT records at `name`, asked of `servers` (the system's resolver when
/// empty). Each record's strings are joined, as a TXT record's text is.
async fn txt_records(servers: &[std::net::SocketAddr], name: &str) -> Result<Vec<String>, String> {
    let resolver = resolver(servers)?;
    let lookup = resolver.txt_lookup(name).await.map_err(|e| e.to_string())?;
    Ok(lookup
        .iter()
        .map(|txt| {
            txt.txt_data().iter().map(|part| String::from_utf8_lossy(part)).collect::<String>()
        })
        .collect())
}

fn resolver(servers: &[std::net::SocketAddr]) -> Result<TokioResolver, String> {
    let mut options = ResolverOpts::default();
    // A record just published must be seen: ask every time.
    options.cache_size = 0;
    options.timeout = std::time::Duration::from_secs(3);
    options.attempts = 2;
    let builder = if servers.is_empty() {
        Resolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let mut config = ResolverConfig::new();
        for server in servers {
            config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
        }
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    Ok(builder.with_options(options).build())
}

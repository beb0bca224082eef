//! A user's personal address book (`/v1/contacts`): any user of this or another hub, each with
//! the user's own categories. Keeping someone as a contact changes nothing for them: no right,
//! no message. Beside the contacts, the answer lists the user's colleagues (the members of
//! their organisations that their directory shows) under the category `colleagues`.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};

use crate::{
    admin::{ApiError, AppState, ErrorBody, auth::actor},
    org::{Actor, DirectoryEntry, account_in, text},
};

/// Most contacts in one address book.
pub(super) const MAX_CONTACTS: usize = 10_000;
/// Most categories on one contact.
pub(super) const MAX_CATEGORIES: usize = 20;
/// Longest category, in characters.
pub(super) const MAX_CATEGORY: usize = 64;
/// The category under which colleagues are listed.
pub(super) const COLLEAGUES: &str = "colleagues";

/// One entry of the address book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    /// Their address (`local@domain`).
    pub address: String,
    /// The user's categories for them.
    pub categories: Vec<String>,
}

/// Serialises writes to address books (each is one stored record).
static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn user_of(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    match actor(state, headers).await? {
        Actor::User(user) => Ok(user),
        Actor::Operator | Actor::Hub => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "an address book is a user's own; use a user token".into(),
        )),
    }
}

async fn load(state: &AppState, user: &str) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let name = format!("contacts:{user}");
    let bytes = state.hub.store().blocking(move |store| store.blob(&name)).await?;
    match bytes {
        None => Ok(BTreeMap::new()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("address book unreadable: {e}"))
        }),
    }
}

async fn save(
    state: &AppState,
    user: &str,
    book: &BTreeMap<String, Vec<String>>,
) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(book)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state.hub.store().put_blob(&format!("contacts:{user}"), bytes).await?;
    Ok(())
}

/// A colleague: a member of one of the user's organisations that their directory shows.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Colleague {
    address: String,
    /// `["colleagues"]`.
    categories: [&'static str; 1],
    /// The organisation's name.
    organisation: String,
    /// Their unit's line.
    unit: String,
}

/// The answer to `GET /v1/contacts`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AddressBook {
    contacts: Vec<Contact>,
    colleagues: Vec<Colleague>,
}

/// The caller's contacts, then their colleagues (a user token only).
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", responses(
    (status = 200, description = "the address book", body = AddressBook),
    (status = 400, description = "the operator token: an address book is a user's own", body = ErrorBody),
))]
pub(super) async fn list_contacts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AddressBook>, ApiError> {
    let user = user_of(&state, &headers).await?;
    let book = load(&state, &user).await?;
    let contacts: Vec<Contact> =
        book.into_iter().map(|(address, categories)| Contact { address, categories }).collect();
    let mut colleagues = Vec::new();
    for entry in state.hub.org().snapshot().directory_of(&user) {
        if let DirectoryEntry::Org { members, name, .. } = entry {
            for member in members.into_iter().filter(|m| m.user != user) {
                colleagues.push(Colleague {
                    address: member.user,
                    categories: [COLLEAGUES],
                    organisation: name.clone(),
                    unit: member.unit,
                });
            }
        }
    }
    Ok(Json(AddressBook { contacts, colleagues }))
}

/// Adds a contact, or sets the categories of one (a user token only).
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = Contact, responses(
    (status = 200, description = "the contact as kept", body = Contact),
    (status = 400, description = "a bad address or category, or the operator token", body = ErrorBody),
    (status = 409, description = "the address book is full (10,000)", body = ErrorBody),
))]
pub(super) async fn put_contact(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(contact): Json<Contact>,
) -> Result<Json<Contact>, ApiError> {
    let user = user_of(&state, &headers).await?;
    let bad = |e: crate::org::OrgError| ApiError(StatusCode::BAD_REQUEST, e.to_string());
    let address = account_in("address", &contact.address).map_err(bad)?.as_str().to_string();
    if contact.categories.len() > MAX_CATEGORIES {
        return Err(ApiError::field("categories", "at most 20"));
    }
    let mut categories = Vec::new();
    for category in &contact.categories {
        let category = text("categories", category, MAX_CATEGORY).map_err(bad)?;
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    let _writing = WRITING.lock().await;
    let mut book = load(&state, &user).await?;
    if !book.contains_key(&address) && book.len() >= MAX_CONTACTS {
        return Err(ApiError(StatusCode::CONFLICT, "the address book is full (10,000)".into()));
    }
    book.insert(address.clone(), categories.clone());
    save(&state, &user, &book).await?;
    Ok(Json(Contact { address, categories }))
}

/// A contact by address.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveBody {
    address: String,
}

/// Takes a contact out of the address book (a user token only).
#[utoipa::path(post, path = "/v1/contacts/remove", tag = "contacts", request_body = RemoveBody, responses(
    (status = 200, description = "the contact removed", body = Contact),
    (status = 404, description = "not a contact", body = ErrorBody),
))]
pub(super) async fn remove_contact(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RemoveBody>,
) -> Result<Json<Contact>, ApiError> {
    let user = user_of(&state, &headers).await?;
    let _writing = WRITING.lock().await;
    let mut book = load(&state, &user).await?;
    let categories = book
        .remove(&body.address)
        .ok_or(ApiError(StatusCode::NOT_FOUND, format!("{} is not a contact", body.address)))?;
    save(&state, &user, &book).await?;
    Ok(Json(Contact { address: body.address, categories }))
}

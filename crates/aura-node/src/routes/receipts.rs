//! `GET /v1/receipts`: every signed usage receipt in the node's ledger stream, each
//! checked against the node's key, with the licenses they were charged under and the
//! settlement totals they add up to (what `aura settle` would sign for all time, computed
//! and not recorded). Operators of every namespace only: receipts are the whole node's.

use aura_core::Timestamp;
use aura_model::StatementId;
use aura_model::receipt::{self, LedgerReceipt};
use aura_model::settle;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::require;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, error_line};

#[derive(Serialize, ToSchema)]
pub(crate) struct ReceiptsView {
    receipts: Vec<ReceiptView>,
    licenses: Vec<LicenseUse>,
    /// Per licensor and currency, over every receipt.
    totals: Vec<TotalView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReceiptView {
    /// The receipt's ledger index.
    index: u64,
    id: String,
    finished_at: String,
    package: String,
    package_name: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    charges: Vec<ChargeView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ChargeView {
    role: String,
    license: String,
    licensor: String,
    price_per_1000_tokens: u64,
    currency: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LicenseUse {
    license: String,
    licensor: String,
    /// The package or expert pack digest it licenses.
    package: String,
    price_per_1000_tokens: u64,
    currency: String,
    receipts: u64,
    tokens: u64,
    amount: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TotalView {
    licensor: String,
    currency: String,
    tokens: u64,
    amount: u64,
}

/// Lists the node's usage receipts with the licenses used and the settlement totals.
#[utoipa::path(get, path = "/v1/receipts", tag = "models",
    responses((status = 200, body = ReceiptsView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ReceiptsView>, ApiError> {
    require(&caller, &[Role::Operator])?;
    if caller.namespaces.is_some() {
        return Err(ApiError::forbidden(
            "receipts are the whole node's; they need an operator key for all namespaces (`*`)",
        ));
    }
    let store = state.engine.store();
    let mut all: Vec<LedgerReceipt> = Vec::new();
    // In a cluster the nodes share one stream for their receipts: each node lists the
    // ones it signed (those of requests it served), which its own key verifies.
    let me = state.engine.node_key().node_id();
    receipt::scan(store.as_ref(), 1, |r| {
        if r.signed.statement.node == me {
            all.push(r);
        }
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(error_line(&e)))?;
    let key = state.engine.node_key();
    for r in &all {
        // A receipt that does not verify is never counted.
        r.verify(&key)
            .map_err(|e| ApiError::internal(error_line(&e)))?;
    }
    let statements = if all.is_empty() {
        Vec::new()
    } else {
        settle::settle(
            &all,
            Timestamp::EPOCH,
            Timestamp::from_nanos(u64::MAX),
            key.node_id(),
            state.engine.now(),
            &mut || StatementId::from_bytes([0; 16]),
        )
        .map_err(|e| ApiError::internal(error_line(&e)))?
    };
    let mut licenses = Vec::new();
    let mut totals = Vec::new();
    for s in &statements {
        for l in &s.lines {
            licenses.push(LicenseUse {
                license: l.license.to_string(),
                licensor: s.payee.to_hex(),
                package: l.subject.to_hex(),
                price_per_1000_tokens: l.price_per_1000_tokens,
                currency: l.currency.clone(),
                receipts: l.receipts,
                tokens: l.tokens,
                amount: l.amount,
            });
        }
        for t in &s.totals {
            totals.push(TotalView {
                licensor: s.payee.to_hex(),
                currency: t.currency.clone(),
                tokens: s
                    .lines
                    .iter()
                    .filter(|l| l.currency == t.currency)
                    .map(|l| l.tokens)
                    .sum(),
                amount: t.amount,
            });
        }
    }
    let receipts = all
        .iter()
        .map(|r| {
            let x = &r.signed.statement;
            ReceiptView {
                index: r.index,
                id: x.id.to_string(),
                finished_at: x.finished_at.to_string(),
                package: x.package.to_hex(),
                package_name: x.package_name.clone(),
                prompt_tokens: x.prompt_tokens,
                completion_tokens: x.completion_tokens,
                charges: x
                    .charges
                    .iter()
                    .map(|c| ChargeView {
                        role: format!("{:?}", c.role).to_lowercase(),
                        license: c.license.to_string(),
                        licensor: c.licensor.to_hex(),
                        price_per_1000_tokens: c.price_per_1000_tokens,
                        currency: c.currency.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(ReceiptsView {
        receipts,
        licenses,
        totals,
    }))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

//! Policy slicing: evaluate only the policies whose scope can match the request.
//!
//! Cedar (4.x) rebuilds every policy's condition expression each time it evaluates it,
//! so a request costs time in proportion to the whole set, although most policies are
//! scoped to other actions, namespaces or levels. A policy whose scope (`principal`,
//! `action`, `resource` constraints) does not match a request contributes nothing to
//! Cedar's answer: Cedar evaluates the scope first and stops there, so such a policy is
//! neither satisfied nor can it fail. Leaving it out therefore changes nothing in the
//! response (decision, deciding policies, errors), and a test compares sliced and whole
//! evaluation on random requests to hold us to that.
//!
//! The scope is matched here against the request's entities as Cedar would see them (the
//! entity and its ancestors, read from the very entity set Cedar evaluates against), by
//! index rather than policy by policy: each of principal, action and resource has a map
//! from the entity a constraint names to the policies naming it, and a request looks up
//! its entities and their ancestors. The set of matching policies, as a bit set, keys a
//! cache of Cedar policy sets, so the usual request pays a few lookups and one hash. The cache is bounded; it is
//! emptied when full (a workload with that many distinct slices loses the cache, not its
//! correctness).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};

/// How many distinct slices a set keeps.
const MAX_SLICES: usize = 4096;

/// A set of policies, by position in load order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn empty(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn intersect(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }
}

/// An entity of the request and its ancestors.
pub(crate) struct Scoped<'a> {
    pub(crate) uid: &'a EntityUid,
    pub(crate) ancestors: Vec<&'a EntityUid>,
}

/// The policies whose constraint on one of principal, action or resource can match a
/// given entity, found by looking up the entity and its ancestors rather than by testing
/// each policy.
#[derive(Debug, Clone)]
struct Index {
    n: usize,
    /// No constraint.
    any: Bits,
    /// `is T`.
    is: HashMap<EntityTypeName, Bits>,
    /// `== e`.
    eq: HashMap<EntityUid, Bits>,
    /// `in e` (the entity itself or an ancestor).
    within: HashMap<EntityUid, Bits>,
    /// `is T in e`.
    is_within: HashMap<(EntityTypeName, EntityUid), Bits>,
}

impl Index {
    fn new(n: usize) -> Index {
        Index {
            n,
            any: Bits::empty(n),
            is: HashMap::new(),
            eq: HashMap::new(),
            within: HashMap::new(),
            is_within: HashMap::new(),
        }
    }

    fn entry<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Bits>, key: K, n: usize) -> &mut Bits {
        map.entry(key).or_insert_with(|| Bits::empty(n))
    }

    fn add(&mut self, i: usize, c: Constraint) {
        let n = self.n;
        match c {
            Constraint::Any => self.any.set(i),
            Constraint::Is(t) => Self::entry(&mut self.is, t, n).set(i),
            Constraint::Eq(u) => Self::entry(&mut self.eq, u, n).set(i),
            Constraint::In(u) => Self::entry(&mut self.within, u, n).set(i),
            Constraint::IsIn(t, u) => Self::entry(&mut self.is_within, (t, u), n).set(i),
        }
    }

    /// The policies whose constraint matches `e`, as Cedar would evaluate it: `in`
    /// holds for the entity itself and for each of its ancestors.
    fn matching(&self, e: &Scoped<'_>) -> Bits {
        let mut out = self.any.clone();
        let t = e.uid.type_name();
        if let Some(b) = self.is.get(t) {
            out.union(b);
        }
        if let Some(b) = self.eq.get(e.uid) {
            out.union(b);
        }
        for u in std::iter::once(e.uid).chain(e.ancestors.iter().copied()) {
            if let Some(b) = self.within.get(u) {
                out.union(b);
            }
            if !self.is_within.is_empty()
                && let Some(b) = self.is_within.get(&(t.clone(), u.clone()))
            {
                out.union(b);
            }
        }
        out
    }
}

/// A scope constraint, in one shape for principal, action and resource.
enum Constraint {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

/// The policies of a set, ready to be sliced per request.
pub(crate) struct Slicer {
    policies: Vec<Policy>,
    principal: Index,
    action: Index,
    resource: Index,
    cache: RwLock<HashMap<Bits, Arc<cedar_policy::PolicySet>>>,
}

impl Clone for Slicer {
    fn clone(&self) -> Self {
        Slicer::new(self.policies.clone())
    }
}

impl Slicer {
    pub(crate) fn new(policies: Vec<Policy>) -> Slicer {
        let n = policies.len();
        let (mut principal, mut action, mut resource) =
            (Index::new(n), Index::new(n), Index::new(n));
        for (i, policy) in policies.iter().enumerate() {
            principal.add(
                i,
                match policy.principal_constraint() {
                    PrincipalConstraint::Any => Constraint::Any,
                    PrincipalConstraint::Eq(u) => Constraint::Eq(u),
                    PrincipalConstraint::In(u) => Constraint::In(u),
                    PrincipalConstraint::Is(t) => Constraint::Is(t),
                    PrincipalConstraint::IsIn(t, u) => Constraint::IsIn(t, u),
                },
            );
            resource.add(
                i,
                match policy.resource_constraint() {
                    ResourceConstraint::Any => Constraint::Any,
                    ResourceConstraint::Eq(u) => Constraint::Eq(u),
                    ResourceConstraint::In(u) => Constraint::In(u),
                    ResourceConstraint::Is(t) => Constraint::Is(t),
                    ResourceConstraint::IsIn(t, u) => Constraint::IsIn(t, u),
                },
            );
            match policy.action_constraint() {
                ActionConstraint::Any => action.add(i, Constraint::Any),
                ActionConstraint::Eq(u) => action.add(i, Constraint::Eq(u)),
                // `action in [a, b]` holds when the action is in a or in b.
                ActionConstraint::In(us) => {
                    for u in us {
                        action.add(i, Constraint::In(u));
                    }
                }
            }
        }
        Slicer {
            policies,
            principal,
            action,
            resource,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The Cedar policy set holding exactly the policies whose scope matches.
    pub(crate) fn slice(
        &self,
        principal: &Scoped<'_>,
        action: &Scoped<'_>,
        resource: &Scoped<'_>,
    ) -> Result<Arc<cedar_policy::PolicySet>, String> {
        let mut key = self.action.matching(action);
        key.intersect(&self.principal.matching(principal));
        key.intersect(&self.resource.matching(resource));
        // A poisoned lock only means another thread panicked while holding it; the map
        // is still a valid cache of immutable sets.
        let cached = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(set) = cached {
            return Ok(set);
        }
        let chosen = self
            .policies
            .iter()
            .enumerate()
            .filter(|(i, _)| key.contains(*i))
            .map(|(_, p)| p.clone());
        let set = Arc::new(
            cedar_policy::PolicySet::from_policies(chosen)
                .map_err(|e| format!("cannot slice the policy set: {e}"))?,
        );
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_SLICES {
            cache.clear();
        }
        cache.insert(key, set.clone());
        Ok(set)
    }
}

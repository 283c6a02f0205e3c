//! Aura's Cedar schema, compiled once per process, and everything about it that requests
//! reuse: entity type names, the level chain, the action entities and which resource
//! types each action applies to.
//!
//! The schema text is compiled into the binary. If it ever failed to load (a bug that the
//! tests catch), [`compiled`] returns the reason and every decision denies.

use std::collections::{HashMap, HashSet};
use std::str::FromStr as _;
use std::sync::OnceLock;

use aura_identity::Level;
use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, Schema, Validator};

/// The schema's source text.
pub(crate) const SCHEMA_TEXT: &str = include_str!("aura.cedarschema");

/// The action an unknown tool is evaluated as.
pub(crate) const CUSTOM_TOOL: &str = "tool.custom";
/// The action every MCP server's tool (`mcp.<server>.<tool>`) is evaluated as.
pub(crate) const MCP_CALL: &str = "mcp.call";
/// The action every installed WASM plugin (`plugin.<name>`) is evaluated as.
pub(crate) const PLUGIN_CALL: &str = "plugin.call";

/// Everything built from the schema once.
pub(crate) struct Compiled {
    pub(crate) schema: Schema,
    pub(crate) validator: Validator,
    pub(crate) types: Types,
    /// `Aura::Level::"L1"` .. `"L4"`, indexed by level - 1.
    pub(crate) levels: [EntityUid; 4],
    /// Every action that applies to something (not the groups), by name.
    pub(crate) actions: HashMap<String, Action>,
    /// The action groups' names: these cannot be requested.
    pub(crate) groups: HashSet<String>,
}

/// An action a request may name.
pub(crate) struct Action {
    pub(crate) uid: EntityUid,
    /// The action's entity, with its groups as ancestors, ready to put in a request's
    /// entity set.
    pub(crate) entity: Entity,
    /// The resource types (base names, e.g. `Path`) it applies to.
    pub(crate) resources: Vec<String>,
}

/// Entity type names, parsed once (each parse of a name costs more than the clone).
pub(crate) struct Types {
    pub(crate) agent: EntityTypeName,
    pub(crate) namespace: EntityTypeName,
    pub(crate) path: EntityTypeName,
    pub(crate) command: EntityTypeName,
    pub(crate) host: EntityTypeName,
    pub(crate) model: EntityTypeName,
    pub(crate) mcp_tool: EntityTypeName,
    pub(crate) image: EntityTypeName,
    pub(crate) plugin: EntityTypeName,
    pub(crate) memory: EntityTypeName,
    pub(crate) mission: EntityTypeName,
    pub(crate) extra: EntityTypeName,
}

static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();

/// The compiled schema, or why it does not load.
pub(crate) fn compiled() -> Result<&'static Compiled, &'static str> {
    COMPILED
        .get_or_init(compile)
        .as_ref()
        .map_err(String::as_str)
}

fn type_name(name: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(&format!("Aura::{name}"))
        .map_err(|e| format!("entity type `Aura::{name}`: {e}"))
}

fn compile() -> Result<Compiled, String> {
    let (schema, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map_err(|e| format!("aura's schema does not load: {e}"))?;
    // The schema is ours; a warning (a shadowed name, say) is a defect to fix, not ignore.
    if let Some(w) = warnings.into_iter().next() {
        return Err(format!("aura's schema has a warning: {w}"));
    }
    let types = Types {
        agent: type_name("Agent")?,
        namespace: type_name("Namespace")?,
        path: type_name("Path")?,
        command: type_name("Command")?,
        host: type_name("Host")?,
        model: type_name("Model")?,
        mcp_tool: type_name("McpTool")?,
        image: type_name("Image")?,
        plugin: type_name("Plugin")?,
        memory: type_name("Memory")?,
        mission: type_name("Mission")?,
        extra: type_name("Extra")?,
    };
    let level_type = type_name("Level")?;
    let levels = Level::ALL
        .map(|l| EntityUid::from_type_name_and_id(level_type.clone(), EntityId::new(l.as_str())));

    let action_entities = schema
        .action_entities()
        .map_err(|e| format!("aura's schema's actions: {e}"))?;
    let mut actions = HashMap::new();
    let mut groups = HashSet::new();
    for uid in schema.actions() {
        let name = uid.id().unescaped().to_owned();
        let resources: Vec<String> = schema
            .resources_for_action(uid)
            .map(|it| it.map(|t| t.basename().to_owned()).collect())
            .unwrap_or_default();
        if resources.is_empty() {
            groups.insert(name);
            continue;
        }
        let entity = action_entities
            .get(uid)
            .cloned()
            .ok_or_else(|| format!("aura's schema has no entity for action {uid}"))?;
        actions.insert(
            name,
            Action {
                uid: uid.clone(),
                entity,
                resources,
            },
        );
    }
    if !actions.contains_key(CUSTOM_TOOL) {
        return Err(format!("aura's schema lacks the action `{CUSTOM_TOOL}`"));
    }
    let validator = Validator::new(schema.clone());
    Ok(Compiled {
        schema,
        validator,
        types,
        levels,
        actions,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_compiles_with_the_expected_actions() {
        let c = match compiled() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let mut names: Vec<&str> = c.actions.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "agent.send",
                "cmd.run",
                "fs.delete",
                "fs.list",
                "fs.read",
                "fs.write",
                "http.fetch",
                "image.generate",
                "mcp.call",
                "memory.forget",
                "memory.recall",
                "memory.search",
                "memory.store",
                "mission.cancel",
                "mission.finish",
                "mission.read",
                "mission.submit",
                "model.use",
                "plugin.call",
                "record.read",
                "tool.custom",
            ]
        );
        let mut groups: Vec<&str> = c.groups.iter().map(String::as_str).collect();
        groups.sort_unstable();
        assert_eq!(groups, ["fs", "lifecycle", "memory", "read", "tool"]);
        assert_eq!(c.actions["memory.store"].resources, ["Memory"]);
        assert_eq!(c.actions["fs.write"].resources, ["Path"]);
        assert_eq!(c.actions["mcp.call"].resources, ["McpTool"]);
        assert_eq!(c.actions["image.generate"].resources, ["Image"]);
        assert_eq!(c.actions["plugin.call"].resources, ["Plugin"]);
        assert_eq!(c.actions["record.read"].resources.len(), 2);
    }
}

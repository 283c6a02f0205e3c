//! `aura tui`: a terminal UI for operators, over the node's authenticated HTTP API and
//! event stream (the same routes, keys and roles as the web console): missions live with
//! their detail, approvals answered with the operator's own signed approval, the ledger's
//! latest signed checkpoint and its live tail, the agents (and creating one), and a help
//! screen. Keyboard only; see docs/tui.md.
//!
//! The screen is drawn from one `App` state on the main task. Three kinds of tasks feed it
//! through one channel: a thread reading the keyboard, a task polling the missions,
//! approvals, agents and checkpoint (woken early whenever an event arrives), and a task
//! following the event stream, reconnecting when it breaks. Each stream event is decoded
//! once, into the engine's `StreamEvent`, where it arrives. Actions run as tasks of their own, so a slow node
//! never freezes the keys; their outcome lands on the status line.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aura_engine::StreamEvent;
use aura_identity::Verdict;
use aura_node::wire::{AgentView, CheckpointView};
use futures_util::StreamExt as _;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph, Tabs, Wrap};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use crate::client::{Client, NodeArgs};
use crate::cmd::agent;
use crate::cmd::decode;
use crate::cmd::mission::{Approver, describe, read_entry};
use crate::hinted;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub(crate) struct TuiArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Who answers escalations (`a` and `r`): a key in this data directory enrolled with
    /// `aura operator enroll`; without it the TUI only watches and steers missions
    #[arg(long = "as", value_name = "NAME")]
    approver: Option<String>,
    /// How often the missions and approvals are re-read, in milliseconds, besides
    /// whenever an event arrives
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60000))]
    refresh_ms: u64,
}

/// How many lines of the ledger's tail are kept on the ledger page.
const EVENT_LINES: usize = 1000;

/// What the tasks tell the screen.
enum Msg {
    Key(KeyEvent),
    Redraw,
    /// The missions, the approvals, the selected mission's detail, the agents and the
    /// latest checkpoint, read together.
    Snapshot(Box<Snapshot>),
    Event(StreamEvent),
    Stream(String),
    Done(anyhow::Result<String>),
}

/// One reading of what the pages show besides the live tail.
struct Snapshot {
    missions: anyhow::Result<Vec<Value>>,
    approvals: anyhow::Result<Vec<Value>>,
    detail: Option<Value>,
    agents: anyhow::Result<Vec<AgentView>>,
    /// `None` while the ledger is empty (or the node would not say).
    checkpoint: Option<CheckpointView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Missions,
    Approvals,
    Ledger,
    Agents,
}

impl Page {
    const ALL: [Page; 4] = [Page::Missions, Page::Approvals, Page::Ledger, Page::Agents];

    fn index(self) -> usize {
        Page::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// What a line of text typed at the bottom is for.
#[derive(Debug, Clone)]
enum Ask {
    Reject(String),
    Cancel(String),
    Pause(String),
    /// `name [level] [namespace]` of an agent to create.
    NewAgent,
}

/// An action the operator asked for, run against the node.
#[derive(Debug, Clone)]
enum Action {
    Approve(String),
    Reject(String, String),
    Cancel(String, String),
    Pause(String, String),
    Resume(String),
    Retry(String),
    CreateAgent {
        name: String,
        level: String,
        namespace: String,
    },
}

struct App {
    page: Page,
    missions: Vec<Value>,
    approvals: Vec<Value>,
    detail: Option<Value>,
    agents: Vec<AgentView>,
    checkpoint: Option<CheckpointView>,
    events: VecDeque<String>,
    mission_list: ListState,
    approval_list: ListState,
    agent_list: ListState,
    /// Lines scrolled up from the newest event (0: follow the newest).
    events_back: usize,
    help: bool,
    ask: Option<(Ask, String)>,
    status: (String, bool),
    stream: String,
    node: String,
    approver: Option<String>,
    quit: bool,
}

impl App {
    fn new(node: String, approver: Option<String>) -> App {
        App {
            page: Page::Missions,
            missions: Vec::new(),
            approvals: Vec::new(),
            detail: None,
            agents: Vec::new(),
            checkpoint: None,
            events: VecDeque::new(),
            mission_list: ListState::default(),
            approval_list: ListState::default(),
            agent_list: ListState::default(),
            events_back: 0,
            help: false,
            ask: None,
            status: ("connecting; ? for help".into(), false),
            stream: "events: connecting".into(),
            node,
            approver,
            quit: false,
        }
    }

    fn selected_mission(&self) -> Option<String> {
        let m = self.missions.get(self.mission_list.selected()?)?;
        m["id"].as_str().map(str::to_owned)
    }

    fn selected_approval(&self) -> Option<String> {
        let a = self.approvals.get(self.approval_list.selected()?)?;
        a["mission"].as_str().map(str::to_owned)
    }

    fn selected_agent(&self) -> Option<&AgentView> {
        self.agents.get(self.agent_list.selected()?)
    }

    /// The mission the keys act on: the one selected on the page shown.
    fn target(&self) -> Option<String> {
        match self.page {
            Page::Approvals => self.selected_approval(),
            _ => self.selected_mission(),
        }
    }

    fn say(&mut self, text: impl Into<String>) {
        self.status = (text.into(), false);
    }

    fn error(&mut self, text: impl Into<String>) {
        self.status = (text.into(), true);
    }

    /// Applies a key; returns an action to run, if the key asked for one.
    fn key(&mut self, k: KeyEvent) -> Option<Action> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return None;
        }
        if let Some((ask, mut text)) = self.ask.take() {
            match k.code {
                KeyCode::Esc => self.say("never mind"),
                KeyCode::Enter => {
                    return match ask {
                        Ask::Reject(m) => Some(Action::Reject(m, text)),
                        Ask::Cancel(m) => Some(Action::Cancel(m, text)),
                        Ask::Pause(m) => Some(Action::Pause(m, text)),
                        Ask::NewAgent => match new_agent(&text) {
                            Ok(action) => Some(action),
                            Err(e) => {
                                self.error(e);
                                None
                            }
                        },
                    };
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.ask = Some((ask, text));
                }
                KeyCode::Char(c) if text.chars().count() < 500 => {
                    text.push(c);
                    self.ask = Some((ask, text));
                }
                _ => self.ask = Some((ask, text)),
            }
            return None;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if k.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return None;
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('1') => self.page = Page::Missions,
            KeyCode::Char('2') => self.page = Page::Approvals,
            KeyCode::Char('3') => self.page = Page::Ledger,
            KeyCode::Char('4') => self.page = Page::Agents,
            KeyCode::Tab => self.page = Page::ALL[(self.page.index() + 1) % Page::ALL.len()],
            KeyCode::BackTab => {
                self.page = Page::ALL[(self.page.index() + Page::ALL.len() - 1) % Page::ALL.len()];
            }
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::PageDown => self.step(10),
            KeyCode::PageUp => self.step(-10),
            KeyCode::Home | KeyCode::Char('g') => self.step(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.step(isize::MAX / 2),
            KeyCode::Char('n') if self.page == Page::Agents => {
                self.ask = Some((Ask::NewAgent, String::new()));
            }
            KeyCode::Char(c @ ('a' | 'r' | 'c' | 'p' | 'u' | 't')) => {
                let on_missions = matches!(self.page, Page::Missions | Page::Approvals);
                let Some(m) = self.target().filter(|_| on_missions) else {
                    self.error("select a mission first (1: missions, 2: approvals)");
                    return None;
                };
                match c {
                    'a' => return Some(Action::Approve(m)),
                    'r' => self.ask = Some((Ask::Reject(m), String::new())),
                    'c' => self.ask = Some((Ask::Cancel(m), String::new())),
                    'p' => self.ask = Some((Ask::Pause(m), String::new())),
                    'u' => return Some(Action::Resume(m)),
                    _ => return Some(Action::Retry(m)),
                }
            }
            _ => {}
        }
        None
    }

    /// Moves the selection of the page shown (or scrolls the events) by `by`.
    fn step(&mut self, by: isize) {
        let (len, list) = match self.page {
            Page::Missions => (self.missions.len(), &mut self.mission_list),
            Page::Approvals => (self.approvals.len(), &mut self.approval_list),
            Page::Agents => (self.agents.len(), &mut self.agent_list),
            Page::Ledger => {
                // Down goes towards the newest line.
                let back = self.events_back as isize - by;
                self.events_back = back.clamp(0, self.events.len() as isize) as usize;
                return;
            }
        };
        if len == 0 {
            list.select(None);
            return;
        }
        let at = list.selected().unwrap_or(0) as isize;
        list.select(Some(
            at.saturating_add(by).clamp(0, len as isize - 1) as usize
        ));
    }

    /// Takes in a new reading, keeping the same rows selected where they still are.
    fn snapshot(&mut self, snap: Snapshot) {
        let Snapshot {
            missions,
            approvals,
            detail,
            agents,
            checkpoint,
        } = snap;
        let mut failed = None;
        match missions {
            Ok(m) => {
                let keep = self.selected_mission();
                self.missions = m;
                reselect(
                    &mut self.mission_list,
                    &self.missions,
                    json_field("id"),
                    keep,
                );
            }
            Err(e) => failed = Some(e),
        }
        match approvals {
            Ok(a) => {
                let keep = self.selected_approval();
                self.approvals = a;
                reselect(
                    &mut self.approval_list,
                    &self.approvals,
                    json_field("mission"),
                    keep,
                );
            }
            Err(e) => failed = failed.or(Some(e)),
        }
        match agents {
            Ok(a) => {
                let keep = self.selected_agent().map(|a| a.id.to_string());
                self.agents = a;
                reselect(
                    &mut self.agent_list,
                    &self.agents,
                    |a: &AgentView| Some(a.id.to_string()),
                    keep,
                );
            }
            Err(e) => failed = failed.or(Some(e)),
        }
        if checkpoint.is_some() {
            self.checkpoint = checkpoint;
        }
        if detail.is_some() || self.selected_mission().is_none() {
            self.detail = detail;
        }
        match failed {
            Some(e) => self.error(one_line(&e)),
            None if self.status.0.starts_with("connecting") => {
                self.say(format!("connected to {}; ? for help", self.node));
            }
            // A reading that works again clears the error it had shown.
            None if self.status.1 && self.status.0.starts_with("cannot read") => {
                self.say(format!("connected to {}", self.node));
            }
            None => {}
        }
    }

    fn event(&mut self, e: &StreamEvent) {
        let line = match e {
            StreamEvent::Entry {
                mission,
                recorded_at,
                ..
            } => {
                // An entry this aura cannot read is left out rather than shown as `?`.
                let Some(text) = read_entry(e).ok().flatten().and_then(|r| r.line()) else {
                    return;
                };
                let mission =
                    mission.map_or_else(|| "node".to_owned(), |m| short(&m.to_string()).to_owned());
                let at = recorded_at.to_string();
                // "2026-12-07T10:45:49.123Z" -> "10:45:49".
                let time = at.get(11..19).unwrap_or(&at);
                format!("{time}  {mission:<8}  {text}")
            }
            StreamEvent::Lagged { .. } => {
                "…  some events were missed; the stream resumed after them".into()
            }
            StreamEvent::Delta { .. } => return,
        };
        if self.events.len() == EVENT_LINES {
            self.events.pop_front();
        }
        self.events.push_back(line);
        if self.events_back > 0 {
            // Reading back: keep the same lines in view.
            self.events_back = (self.events_back + 1).min(self.events.len());
        }
    }

    fn draw(&mut self, f: &mut ratatui::Frame<'_>) {
        let [top, body, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let titles = [
            format!("1 Missions ({})", self.missions.len()),
            format!("2 Approvals ({})", self.approvals.len()),
            "3 Ledger".to_owned(),
            format!("4 Agents ({})", self.agents.len()),
        ];
        let [tabs, right] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(44)]).areas(top);
        f.render_widget(
            Tabs::new(titles)
                .select(self.page.index())
                .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
            tabs,
        );
        f.render_widget(
            Paragraph::new(format!("{}  ? help  q quit", self.stream))
                .alignment(ratatui::layout::Alignment::Right),
            right,
        );
        match self.page {
            Page::Missions => self.draw_missions(f, body),
            Page::Approvals => self.draw_approvals(f, body),
            Page::Ledger => self.draw_ledger(f, body),
            Page::Agents => self.draw_agents(f, body),
        }
        let line = match &self.ask {
            Some((ask, text)) => {
                let what = match ask {
                    Ask::Reject(m) => format!("reject {} because", short(m)),
                    Ask::Cancel(m) => format!("cancel {} because", short(m)),
                    Ask::Pause(m) => format!("pause {} because", short(m)),
                    Ask::NewAgent => "new agent: name [L1-L4] [namespace]".to_owned(),
                };
                Line::from(vec![
                    Span::styled(
                        format!("{what}: "),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(format!("{text}_")),
                    Span::raw("   (Enter sends, Esc cancels)"),
                ])
            }
            None => {
                let style = if self.status.1 {
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else {
                    Style::new()
                };
                Line::styled(self.status.0.clone(), style)
            }
        };
        f.render_widget(Paragraph::new(line), bottom);
        if self.help {
            self.draw_help(f, body);
        }
    }

    fn draw_missions(&mut self, f: &mut ratatui::Frame<'_>, area: Rect) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                .areas(area);
        let items: Vec<ListItem<'_>> = self
            .missions
            .iter()
            .map(|m| {
                let state = m["state"].as_str().unwrap_or("?");
                let paused = if m["paused"].as_bool() == Some(true) {
                    " (paused)"
                } else {
                    ""
                };
                ListItem::new(Line::from(vec![
                    Span::raw(format!("{}  ", short(m["id"].as_str().unwrap_or("?")))),
                    Span::styled(format!("{state:<10}"), state_style(state)),
                    Span::raw(format!(
                        "{paused} {}",
                        m["objective"].as_str().unwrap_or("")
                    )),
                ]))
            })
            .collect();
        let empty = items.is_empty();
        f.render_stateful_widget(
            List::new(items)
                .block(Block::bordered().title(" Missions (newest first) "))
                .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                .highlight_symbol("> "),
            left,
            &mut self.mission_list,
        );
        if empty {
            f.render_widget(
                Paragraph::new("no missions yet").block(Block::bordered().title(" Missions ")),
                left,
            );
        }
        let text = match (&self.detail, self.selected_mission()) {
            (Some(d), Some(id)) if d["id"].as_str() == Some(&id) => describe(d),
            (_, Some(_)) => "reading…".to_owned(),
            (_, None) => "select a mission with the arrows or j/k".to_owned(),
        };
        f.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Detail (c cancel, p pause, u resume, t retry) ")),
            right,
        );
    }

    fn draw_approvals(&mut self, f: &mut ratatui::Frame<'_>, area: Rect) {
        let items: Vec<ListItem<'_>> = self
            .approvals
            .iter()
            .map(|p| {
                let e = &p["escalation"];
                ListItem::new(vec![
                    Line::from(vec![
                        Span::raw(format!("{}  ", short(p["mission"].as_str().unwrap_or("?")))),
                        Span::styled(
                            format!("needs {}", e["level"].as_str().unwrap_or("?")),
                            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                        ),
                        Span::raw(format!(
                            " for `{}` {}",
                            e["action"].as_str().unwrap_or("?"),
                            e["arguments"]
                        )),
                    ]),
                    Line::from(format!(
                        "          objective: {}",
                        p["objective"].as_str().unwrap_or("")
                    )),
                ])
            })
            .collect();
        let who = match &self.approver {
            Some(n) => format!(" Approvals (a approve, r reject, as {n}) "),
            None => " Approvals (start with --as NAME to answer them) ".to_owned(),
        };
        if items.is_empty() {
            f.render_widget(
                Paragraph::new("nothing is waiting for approval")
                    .block(Block::bordered().title(who)),
                area,
            );
            return;
        }
        f.render_stateful_widget(
            List::new(items)
                .block(Block::bordered().title(who))
                .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                .highlight_symbol("> "),
            area,
            &mut self.approval_list,
        );
    }

    fn draw_ledger(&mut self, f: &mut ratatui::Frame<'_>, area: Rect) {
        let [head, area] =
            Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(area);
        let text = match &self.checkpoint {
            Some(c) => {
                let cp = &c.checkpoint.checkpoint;
                let root = cp.root.to_hex();
                format!(
                    "tree size {}  root {}…  signed {}\nby node key {} (check it offline: aura ledger verify)",
                    cp.tree_size,
                    root.get(..16).unwrap_or(&root),
                    cp.time,
                    c.public_key
                )
            }
            None => "no signed checkpoint yet: the ledger is empty".to_owned(),
        };
        f.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Latest signed checkpoint ")),
            head,
        );
        let rows = usize::from(area.height.saturating_sub(2));
        let end = self.events.len().saturating_sub(self.events_back);
        let start = end.saturating_sub(rows);
        let lines: Vec<Line<'_>> = self
            .events
            .range(start..end)
            .map(|l| Line::raw(l.as_str()))
            .collect();
        let title = if self.events_back == 0 {
            " Ledger tail (live, newest at the bottom) ".to_owned()
        } else {
            format!(
                " Ledger tail ({} newer below; End follows) ",
                self.events_back
            )
        };
        let body = if lines.is_empty() {
            Paragraph::new("no entries recorded since the TUI started")
        } else {
            Paragraph::new(lines)
        };
        f.render_widget(body.block(Block::bordered().title(title)), area);
    }

    fn draw_agents(&mut self, f: &mut ratatui::Frame<'_>, area: Rect) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
                .areas(area);
        let items: Vec<ListItem<'_>> = self
            .agents
            .iter()
            .map(|a| {
                ListItem::new(format!(
                    "{}  {:<20} {}  {}",
                    short(&a.id.to_string()),
                    a.name,
                    a.level,
                    a.namespace
                ))
            })
            .collect();
        let title = " Agents (n new) ";
        if items.is_empty() {
            f.render_widget(
                Paragraph::new("no agents yet; n creates one")
                    .block(Block::bordered().title(title)),
                left,
            );
        } else {
            f.render_stateful_widget(
                List::new(items)
                    .block(Block::bordered().title(title))
                    .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                    .highlight_symbol("> "),
                left,
                &mut self.agent_list,
            );
        }
        let text = match self.selected_agent() {
            Some(a) => {
                let id = a.id.to_string();
                let missions: Vec<String> = self
                    .missions
                    .iter()
                    .filter(|m| m["agent"].as_str() == Some(&id))
                    .map(|m| {
                        format!(
                            "  {}  {:<10} {}",
                            short(m["id"].as_str().unwrap_or("?")),
                            m["state"].as_str().unwrap_or("?"),
                            m["objective"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                let missions = if missions.is_empty() {
                    "no missions listed".to_owned()
                } else {
                    format!("missions:\n{}", missions.join("\n"))
                };
                format!("{}\n{missions}", agent::describe(a))
            }
            None => "select an agent with the arrows or j/k".to_owned(),
        };
        f.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Agent ")),
            right,
        );
    }

    fn draw_help(&self, f: &mut ratatui::Frame<'_>, area: Rect) {
        let text = HELP.trim_matches('\n');
        let height = (text.lines().count() as u16 + 2).min(area.height);
        let width = 78.min(area.width);
        let popup = Rect {
            x: area.x + (area.width - width) / 2,
            y: area.y + (area.height - height) / 2,
            width,
            height,
        };
        f.render_widget(Clear, popup);
        f.render_widget(
            Paragraph::new(text).block(Block::bordered().title(" Keys (any key closes) ")),
            popup,
        );
    }
}

const HELP: &str = "
 1 2 3 4, Tab     missions, approvals, ledger, agents
 Up Down, j k     select (PgUp PgDn, g G: further); scroll the ledger
 a                approve the selected escalation, signed as --as NAME
 r                reject it, with a reason
 c                cancel the selected mission, with a reason
 p  u             pause it (with a reason), resume it
 t                run its waiting retries now
 n                on the agents page: create an agent (name, level, namespace)
 ?                this help
 q, Ctrl-C        quit

 Everything goes through the node's API with your key (--api-key or
 AURA_API_KEY); what your role may not do, the node refuses, and the
 refusal shows on the bottom line.
";

/// Keeps `keep` (a row's `key`) selected if it is still listed; otherwise the same row,
/// or the first.
fn reselect<T>(
    list: &mut ListState,
    rows: &[T],
    key: impl Fn(&T) -> Option<String>,
    keep: Option<String>,
) {
    if rows.is_empty() {
        list.select(None);
        return;
    }
    let at = keep
        .and_then(|k| rows.iter().position(|r| key(r).as_deref() == Some(&k)))
        .or(list.selected())
        .unwrap_or(0);
    list.select(Some(at.min(rows.len() - 1)));
}

/// A JSON row's string field, as `reselect`'s key.
fn json_field(field: &str) -> impl Fn(&Value) -> Option<String> + '_ {
    move |row| row[field].as_str().map(str::to_owned)
}

/// Reads `name [level] [namespace]` typed on the agents page (level L2 and namespace
/// `default` unless given), as the web console's form defaults them.
fn new_agent(text: &str) -> Result<Action, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let usage = "type a name, then optionally a level (L1-L4) and a namespace";
    match words.as_slice() {
        [] => Err(format!("no agent created: {usage}")),
        [name, rest @ ..] if rest.len() <= 2 => {
            let level = rest.first().map_or("L2", |l| l);
            if !matches!(level, "L1" | "L2" | "L3" | "L4") {
                return Err(format!("`{level}` is not a level: {usage}"));
            }
            Ok(Action::CreateAgent {
                name: (*name).to_owned(),
                level: level.to_owned(),
                namespace: rest.get(1).map_or("default", |n| n).to_owned(),
            })
        }
        _ => Err(format!("too many words: {usage}")),
    }
}

fn state_style(state: &str) -> Style {
    match state {
        "completed" => Style::new().fg(Color::Green),
        "failed" | "cancelled" => Style::new().fg(Color::Red),
        "escalated" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::Cyan),
    }
}

/// The last eight characters of an id, its random part: enough to tell missions apart on
/// a screen (their first characters are the time they were made, alike for a burst).
fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// An error as one line, with its hint if it has one.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    if let Some(hint) = crate::hint_for(e) {
        line.push_str(&format!(" (hint: {hint})"));
    }
    line
}

/// Runs an action against the node; returns what to say on the status line.
async fn act(
    client: &Client,
    approver: Option<&Approver>,
    action: Action,
) -> anyhow::Result<String> {
    let approver = || {
        approver.ok_or_else(|| {
            hinted(
                "answering escalations needs an approver",
                "start with `aura tui --as NAME`, NAME enrolled with `aura operator enroll`",
            )
        })
    };
    let reason = |r: String| if r.trim().is_empty() { None } else { Some(r) };
    let state = |m: &Value| m["state"].as_str().unwrap_or("?").to_owned();
    Ok(match action {
        Action::Approve(m) => {
            let (answers, after) = approver()?
                .answer(client, &m, Verdict::Approve, None, Duration::from_secs(600))
                .await?;
            format!(
                "approved {} ({answers}): it is now {}",
                short(&m),
                state(&after)
            )
        }
        Action::Reject(m, why) => {
            let (answers, after) = approver()?
                .answer(
                    client,
                    &m,
                    Verdict::Reject,
                    reason(why),
                    Duration::from_secs(600),
                )
                .await?;
            format!(
                "rejected {} ({answers}): it is now {}",
                short(&m),
                state(&after)
            )
        }
        Action::Cancel(m, why) => {
            let after: Value = client
                .post(
                    &format!("/v1/missions/{m}/cancel"),
                    &json!({ "reason": reason(why) }),
                )
                .await?;
            format!("cancelled {}: it is now {}", short(&m), state(&after))
        }
        Action::Pause(m, why) => {
            let _: Value = client
                .post(
                    &format!("/v1/missions/{m}/pause"),
                    &json!({ "reason": reason(why) }),
                )
                .await?;
            format!("paused {}", short(&m))
        }
        Action::Resume(m) => {
            let _: Value = client
                .post(&format!("/v1/missions/{m}/resume"), &json!({}))
                .await?;
            format!("resumed {}", short(&m))
        }
        Action::Retry(m) => {
            let _: Value = client
                .post(&format!("/v1/missions/{m}/retry"), &json!({}))
                .await?;
            format!("retrying {} now", short(&m))
        }
        Action::CreateAgent {
            name,
            level,
            namespace,
        } => {
            let raw: Value = client
                .post(
                    "/v1/agents",
                    &json!({ "name": name, "level": level, "namespace": namespace }),
                )
                .await?;
            let a: AgentView = decode(&raw)?;
            format!("created agent {} ({})", a.name, a.id)
        }
    })
}

/// Reads the missions, the approvals, the selected mission, the agents and the latest
/// checkpoint, every `every` or when woken.
async fn poll(
    client: Client,
    every: Duration,
    mut selected: watch::Receiver<Option<String>>,
    wake: Arc<Notify>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    loop {
        let id = selected.borrow_and_update().clone();
        let missions = client.get::<Vec<Value>>("/v1/missions?limit=200").await;
        let approvals = client.get::<Vec<Value>>("/v1/approvals").await;
        let detail = match id {
            Some(id) => client
                .get::<Value>(&format!("/v1/missions/{id}"))
                .await
                .ok(),
            None => None,
        };
        let agents = client
            .get::<Value>("/v1/agents")
            .await
            .and_then(|raw| decode::<Vec<AgentView>>(&raw));
        // 404 while the ledger is empty; the page says so.
        let checkpoint = client
            .get::<Value>("/v1/ledger/checkpoint")
            .await
            .ok()
            .and_then(|raw| decode::<CheckpointView>(&raw).ok());
        let missions =
            missions.map_err(|e| anyhow::anyhow!("cannot read the missions: {}", one_line(&e)));
        let approvals =
            approvals.map_err(|e| anyhow::anyhow!("cannot read the approvals: {}", one_line(&e)));
        let agents =
            agents.map_err(|e| anyhow::anyhow!("cannot read the agents: {}", one_line(&e)));
        let snapshot = Snapshot {
            missions,
            approvals,
            detail,
            agents,
            checkpoint,
        };
        if tx.send(Msg::Snapshot(Box::new(snapshot))).is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = wake.notified() => {
                // Events come in bursts (a step is several entries): read once per burst.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            changed = selected.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Follows the event stream from now on, reconnecting (after a pause) when it breaks.
async fn follow(client: Client, wake: Arc<Notify>, tx: mpsc::UnboundedSender<Msg>) {
    let mut from: Option<u64> = None;
    // Why the stream is down is said once per outage; the top line says it is offline.
    let mut told = false;
    loop {
        let query = from.map_or_else(String::new, |n| format!("from={n}"));
        match client.events(&query).await {
            Err(e) => {
                if tx.send(Msg::Stream("events: offline".into())).is_err() {
                    return;
                }
                if !told {
                    told = true;
                    let _ = tx.send(Msg::Done(Err(anyhow::anyhow!("{}", one_line(&e)))));
                }
            }
            Ok(mut ws) => {
                told = false;
                if tx.send(Msg::Stream("events: live".into())).is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
                        continue;
                    };
                    // What this aura cannot read (a newer node's new kind of event) is
                    // skipped; the entries around it still show.
                    let Ok(event) = serde_json::from_str::<StreamEvent>(&text) else {
                        continue;
                    };
                    match &event {
                        StreamEvent::Entry { seq, .. } => {
                            from = Some(seq + 1);
                            wake.notify_one();
                        }
                        StreamEvent::Lagged { next_seq } => from = Some(*next_seq),
                        StreamEvent::Delta { .. } => {}
                    }
                    if tx.send(Msg::Event(event)).is_err() {
                        return;
                    }
                }
                if tx.send(Msg::Stream("events: reconnecting".into())).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Puts the terminal back as it was, also when the TUI fails or panics.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub(crate) async fn run(home: &Home, args: TuiArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(hinted(
            "aura tui needs a terminal",
            "run it in a terminal; for scripts use `aura mission list`, `aura approvals` and `--json`",
        ));
    }
    let client = Client::new(home, &args.node)?;
    // Loaded before the screen is taken, so a sealed key's passphrase can be asked for.
    let approver = match &args.approver {
        Some(name) => Some(Arc::new(Approver::load(home, name)?)),
        None => None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (select_tx, select_rx) = watch::channel(None::<String>);
    let wake = Arc::new(Notify::new());

    let mut terminal =
        ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot take over the terminal: {e}"))?;
    let _restore = Restore;

    // The keyboard is read on a thread of its own: crossterm's reads block.
    let keys = tx.clone();
    std::thread::spawn(move || {
        loop {
            let msg = match event::read() {
                Ok(Event::Key(k)) => Msg::Key(k),
                Ok(Event::Resize(..)) => Msg::Redraw,
                Ok(_) => continue,
                Err(_) => return,
            };
            if keys.send(msg).is_err() {
                return;
            }
        }
    });
    let poller = tokio::spawn(poll(
        client.clone(),
        Duration::from_millis(args.refresh_ms),
        select_rx,
        wake.clone(),
        tx.clone(),
    ));
    let follower = tokio::spawn(follow(client.clone(), wake.clone(), tx.clone()));

    let mut app = App::new(client.base().to_owned(), args.approver.clone());
    let outcome = loop {
        if let Err(e) = terminal.draw(|f| app.draw(f)) {
            break Err(anyhow::anyhow!("cannot draw on the terminal: {e}"));
        }
        let Some(msg) = rx.recv().await else {
            break Ok(());
        };
        // Take everything already waiting before drawing again, so that a burst of
        // events costs one frame.
        let mut batch = vec![msg];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            match msg {
                Msg::Key(k) => {
                    if let Some(action) = app.key(k) {
                        app.say("sending…");
                        let (client, approver, tx, wake) =
                            (client.clone(), approver.clone(), tx.clone(), wake.clone());
                        tokio::spawn(async move {
                            let done = act(&client, approver.as_deref(), action).await;
                            wake.notify_one();
                            let _ = tx.send(Msg::Done(done));
                        });
                    }
                }
                Msg::Redraw => {}
                Msg::Snapshot(snap) => app.snapshot(*snap),
                Msg::Event(e) => app.event(&e),
                Msg::Stream(s) => app.stream = s,
                Msg::Done(Ok(text)) => app.say(text),
                Msg::Done(Err(e)) => app.error(one_line(&e)),
            }
        }
        if app.quit {
            break Ok(());
        }
        let selected = app.selected_mission();
        if *select_tx.borrow() != selected {
            let _ = select_tx.send(selected);
        }
    };
    poller.abort();
    follower.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    /// A reading with these missions and approvals, no agents and no checkpoint.
    fn snap(missions: Vec<Value>, approvals: Vec<Value>) -> Snapshot {
        Snapshot {
            missions: Ok(missions),
            approvals: Ok(approvals),
            detail: None,
            agents: Ok(vec![]),
            checkpoint: None,
        }
    }

    fn missions(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{i:08}-mission"), "state": "running", "objective": "x"}))
            .collect()
    }

    #[test]
    fn the_selection_follows_its_mission_when_the_list_changes() {
        let mut app = App::new("node".into(), None);
        app.snapshot(snap(missions(3), vec![]));
        app.key(key(KeyCode::Down));
        assert_eq!(app.selected_mission().as_deref(), Some("00000001-mission"));
        // A new mission arrives at the top: the same mission stays selected.
        let mut more = vec![json!({"id": "new-mission", "state": "submitted"})];
        more.extend(missions(3));
        app.snapshot(snap(more, vec![]));
        assert_eq!(app.selected_mission().as_deref(), Some("00000001-mission"));
        // Moving past the ends stays on the list.
        app.key(key(KeyCode::End));
        app.key(key(KeyCode::Down));
        assert_eq!(app.selected_mission().as_deref(), Some("00000002-mission"));
        app.snapshot(snap(vec![], vec![]));
        assert_eq!(app.selected_mission(), None);
        assert!(app.key(key(KeyCode::Char('a'))).is_none());
        assert!(app.status.1, "acting on nothing says so");
    }

    #[test]
    fn reject_asks_for_a_reason_and_escape_sends_nothing() {
        let mut app = App::new("node".into(), Some("alice".into()));
        app.snapshot(snap(
            missions(1),
            vec![json!({"mission": "00000000-mission", "escalation": {}})],
        ));
        app.key(key(KeyCode::Char('2')));
        assert!(app.key(key(KeyCode::Char('r'))).is_none());
        for c in "stale".chars() {
            assert!(app.key(key(KeyCode::Char(c))).is_none());
        }
        // While typing, q is a letter, not quit.
        app.key(key(KeyCode::Char('q')));
        assert!(!app.quit);
        app.key(key(KeyCode::Backspace));
        match app.key(key(KeyCode::Enter)) {
            Some(Action::Reject(m, why)) => {
                assert_eq!((m.as_str(), why.as_str()), ("00000000-mission", "stale"));
            }
            other => panic!("{other:?}"),
        }
        app.key(key(KeyCode::Char('r')));
        app.key(key(KeyCode::Char('x')));
        assert!(app.key(key(KeyCode::Esc)).is_none());
        assert!(app.ask.is_none());
        assert!(matches!(
            app.key(key(KeyCode::Char('a'))),
            Some(Action::Approve(m)) if m == "00000000-mission"
        ));
    }

    #[test]
    fn the_events_page_keeps_the_newest_thousand_lines() {
        // Entries as the node's stream sends them (the engine's own type, serialised).
        let entry = |seq: u64, kind: &str| StreamEvent::Entry {
            seq,
            agent: aura_core::AgentId::from_bytes([1; 16]),
            agent_seq: seq,
            kind: kind.into(),
            mission: Some(aura_core::MissionId::from_bytes([2; 16])),
            recorded_at: aura_core::Timestamp::from_secs(1_796_640_349),
            body: json!({}),
        };
        let mut app = App::new("node".into(), None);
        for seq in 0..1500 {
            app.event(&entry(seq, "agent.created"));
        }
        assert_eq!(app.events.len(), EVENT_LINES);
        let last = app.events.back().cloned().unwrap_or_default();
        assert!(last.ends_with("#1499 agent.created"), "{last}");
        assert_eq!(
            app.events
                .front()
                .map(|l| l.ends_with("#500 agent.created")),
            Some(true)
        );
        // A mission entry whose body is no record, and deltas, are not shown.
        app.event(&entry(1500, "mission.heartbeat"));
        app.event(&StreamEvent::Delta {
            mission: aura_core::MissionId::from_bytes([2; 16]),
            text: "hi".into(),
        });
        assert_eq!(app.events.len(), EVENT_LINES);
        assert_eq!(app.events.back(), Some(&last));
    }

    #[test]
    fn n_on_the_agents_page_asks_for_an_agent_and_reads_its_level_and_namespace() {
        let mut app = App::new("node".into(), None);
        // Elsewhere n is nothing.
        assert!(app.key(key(KeyCode::Char('n'))).is_none());
        assert!(app.ask.is_none());
        app.key(key(KeyCode::Char('4')));
        assert_eq!(app.page, Page::Agents);
        fn typed(app: &mut App, text: &str) -> Option<Action> {
            app.key(key(KeyCode::Char('n')));
            for c in text.chars() {
                app.key(key(KeyCode::Char(c)));
            }
            app.key(key(KeyCode::Enter))
        }
        match typed(&mut app, "scout") {
            Some(Action::CreateAgent {
                name,
                level,
                namespace,
            }) => assert_eq!(
                (name.as_str(), level.as_str(), namespace.as_str()),
                ("scout", "L2", "default")
            ),
            other => panic!("{other:?}"),
        }
        match typed(&mut app, "ops L3 team") {
            Some(Action::CreateAgent {
                level, namespace, ..
            }) => assert_eq!((level.as_str(), namespace.as_str()), ("L3", "team")),
            other => panic!("{other:?}"),
        }
        assert!(typed(&mut app, "x L9").is_none());
        assert!(app.status.0.contains("not a level"), "{:?}", app.status);
        assert!(typed(&mut app, "").is_none());
        assert!(typed(&mut app, "a L1 b c").is_none());
        assert!(app.status.0.contains("too many"), "{:?}", app.status);
        // Mission keys do nothing on the agents page but say so.
        assert!(app.key(key(KeyCode::Char('a'))).is_none());
        assert!(app.status.1);
    }
}

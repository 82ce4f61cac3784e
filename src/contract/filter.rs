//! `spec.filter` (docs/src/filters.md): a CEL expression over `event`
//! that must be true for the hook to get the event.
//!
//! The `cel` crate parses and interprets CEL but, unlike cel-go, has no
//! type checker and no cost budget. So compiling is parsing plus checks of
//! our own over the syntax tree, which together bound the cost of one
//! evaluation by the size of the expression times the size of the event:
//!
//! - the only variable is `event` (an unknown identifier is refused by
//!   name, instead of failing on every event);
//! - no comprehension (`all`, `exists`, `exists_one`, `map`, `filter`)
//!   inside the body of another (a chain such as
//!   `l.filter(x, x > 1).exists(x, x > 5)` is fine: the loops run one
//!   after the other), so no loop runs once per element of another;
//! - a comprehension's body does not read `event`, only its own variable:
//!   otherwise each of n elements could compare a large part of the event
//!   (`l.exists(x, event.data.text.contains(x))`), n times the event;
//! - at most [`MAX_REFERENCES`] references to variables, so the values a
//!   filter builds (concatenations, lists) hold at most that many times
//!   the event;
//! - the syntax tree is at most [`MAX_DEPTH`] deep, so neither this
//!   check nor the interpreter can exhaust a thread's stack.
//!
//! Measured (`a_filter_costs_at_most_linear_time_in_the_event`): see the
//! numbers in docs/src/filters.md#what-a-filter-costs.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use cel::{
    Context, Env, IdedExpr, Program, Value,
    common::ast::{EntryExpr, Expr},
    objects::{Key, Map},
};

use crate::wire::{envelope::format_created_at, stream_entry::Event};

/// Longest filter accepted, in characters (the CRD's `maxLength`).
pub const MAX_FILTER_CHARS: usize = 1024;

/// Deepest syntax tree accepted.
///
/// The interpreter recurses once per level, with frames of up to ~40 KB
/// in a debug build: 16 levels stay within 1 MiB of a tokio worker's 2 MiB
/// (`deep_filters_are_refused_without_exhausting_the_stack`). Real
/// filters nest a few levels.
pub const MAX_DEPTH: usize = 16;

/// Stack of the thread that compiles a filter (see [`Filter::compile`]).
const COMPILE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Most references to `event` and to comprehension element variables.
///
/// Every value a filter makes is built from what it references (and from
/// literals, at most 1 KiB): `event.data.s + event.data.s + ...`, or
/// `map(x, [x, x, ...])`, holds at most this many times the event in
/// memory while it is evaluated (32 MiB for a 1 MiB event), instead of a
/// hundred times for a filter of 1 KiB.
pub const MAX_REFERENCES: usize = 32;

/// The one variable a filter reads.
pub const EVENT_VARIABLE: &str = "event";

/// Most characters of an evaluation error kept (it may quote a value of
/// the event; the Delivering message shows it).
pub const MAX_ERROR_CHARS: usize = 200;

/// The CEL standard library, built once: a context per event borrows it.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Why a filter does not compile; the message goes to the `InvalidFilter`
/// condition as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFilter {
    /// Longer than [`MAX_FILTER_CHARS`].
    #[error("filter is {0} characters long, the limit is {MAX_FILTER_CHARS}")]
    TooLong(usize),
    /// Not CEL: the parser's messages.
    #[error("filter does not parse: {0}")]
    Syntax(String),
    /// An identifier other than `event` (or a comprehension's own variable).
    #[error("filter reads an unknown variable {0:?}: the only variable is event")]
    UnknownVariable(String),
    /// A comprehension inside the body of another.
    #[error(
        "filter nests a comprehension (all, exists, exists_one, map, filter) inside another: the cost would grow with the square of the event"
    )]
    NestedComprehension,
    /// A comprehension's body reads `event`.
    #[error(
        "filter reads event inside a comprehension (all, exists, exists_one, map, filter): only the comprehension's own variable may be read there"
    )]
    EventInComprehension,
    /// A message literal (`Type{field: value}`): there are no message types.
    #[error("filter builds a message ({0}): filters have no message types")]
    MessageLiteral(String),
    /// More than [`MAX_REFERENCES`] references to variables.
    #[error(
        "filter reads variables (event, or a comprehension's own) more than {MAX_REFERENCES} times: each may copy a large part of the event"
    )]
    TooManyReferences,
    /// The syntax tree is deeper than [`MAX_DEPTH`].
    #[error("filter nests more than {MAX_DEPTH} levels deep (operators, calls, lists and maps each add one)")]
    TooDeep,
    /// The compiling thread could not start or failed (not the filter's
    /// fault; the next reconcile tries again).
    #[error("filter could not be compiled: {0}")]
    NoCompiler(String),
}

/// A compiled filter: a program that passed the static checks.
pub struct Filter {
    source: Box<str>,
    program: Program,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

/// Two filters are the same when their source is: the program is a
/// function of it.
impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Filter {
    /// Parses and checks `source`.
    ///
    /// On a thread of its own with a large stack: the parser recurses
    /// once per level of nesting, and 1,024 characters of `(((...` or
    /// `!!!...` overflow an ordinary thread's stack before any check of
    /// ours can refuse them. The stack is reserved, not committed: only
    /// what the parser touches is memory. A program deeper than
    /// [`MAX_DEPTH`] is dropped on that thread too.
    pub fn compile(source: &str) -> Result<Filter, InvalidFilter> {
        let chars = source.chars().count();
        if chars > MAX_FILTER_CHARS {
            return Err(InvalidFilter::TooLong(chars));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("filter-compile".into())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, || compile_here(source))
                .map_err(|e| InvalidFilter::NoCompiler(e.to_string()))?
                .join()
                .unwrap_or_else(|_| Err(InvalidFilter::NoCompiler("the parser panicked".into())))
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `event` passes. An error (a missing key, a wrong type, a
    /// result that is not a bool) is text of at most [`MAX_ERROR_CHARS`].
    pub fn matches(&self, event: &EventValue) -> Result<bool, String> {
        match self.program.execute(&event.context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the filter's result is a {}, not a bool", other.type_of())),
            Err(e) => Err(cut(&e.to_string())),
        }
    }
}

/// [`Filter::compile`] on the calling thread.
fn compile_here(source: &str) -> Result<Filter, InvalidFilter> {
    let program = Program::compile(source).map_err(|errors| {
        // One line per error, without the source snippet the crate
        // draws below it: the message is shown in one table cell.
        let lines: Vec<String> = errors
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
            .collect();
        InvalidFilter::Syntax(lines.join("; "))
    })?;
    check(program.expression(), &mut Scope::default(), Loop::Outside, 0)?;
    Ok(Filter {
        source: source.into(),
        program,
    })
}

/// `text`, cut to [`MAX_ERROR_CHARS`] characters.
fn cut(text: &str) -> String {
    let mut chars = text.chars();
    let mut head: String = chars.by_ref().take(MAX_ERROR_CHARS).collect();
    if chars.next().is_some() {
        head.push_str("...");
    }
    head
}

/// Where in a comprehension a node is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loop {
    /// Not in a comprehension, or in the range of one (evaluated once).
    Outside,
    /// In the body of one (evaluated once per element).
    Body,
}

/// What the checks carry through the tree.
#[derive(Default)]
struct Scope<'e> {
    /// The comprehension variables visible here, and whether a reference
    /// to each counts (the element variables do; the accumulator the
    /// macros generate does not).
    names: Vec<(&'e str, bool)>,
    /// References to `event` and to element variables so far.
    references: usize,
}

impl Scope<'_> {
    fn reference(&mut self) -> Result<(), InvalidFilter> {
        self.references += 1;
        if self.references > MAX_REFERENCES {
            return Err(InvalidFilter::TooManyReferences);
        }
        Ok(())
    }
}

/// The static checks (see the module's doc).
fn check<'e>(expr: &'e IdedExpr, scope: &mut Scope<'e>, place: Loop, depth: usize) -> Result<(), InvalidFilter> {
    if depth > MAX_DEPTH {
        return Err(InvalidFilter::TooDeep);
    }
    let depth = depth + 1;
    match &expr.expr {
        Expr::Ident(name) => {
            if let Some(&(_, counts)) = scope.names.iter().rev().find(|(n, _)| n == name) {
                if counts { scope.reference() } else { Ok(()) }
            } else if name == EVENT_VARIABLE {
                match place {
                    Loop::Outside => scope.reference(),
                    Loop::Body => Err(InvalidFilter::EventInComprehension),
                }
            } else {
                Err(InvalidFilter::UnknownVariable(name.clone()))
            }
        }
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
        Expr::Select(select) => check(&select.operand, scope, place, depth),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check(target, scope, place, depth)?;
            }
            call.args.iter().try_for_each(|a| check(a, scope, place, depth))
        }
        Expr::List(list) => list.elements.iter().try_for_each(|e| check(e, scope, place, depth)),
        Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                check(&e.key, scope, place, depth)?;
                check(&e.value, scope, place, depth)
            }
            EntryExpr::StructField(f) => check(&f.value, scope, place, depth),
        }),
        Expr::Struct(s) => Err(InvalidFilter::MessageLiteral(s.type_name.clone())),
        Expr::Comprehension(c) => {
            if place == Loop::Body {
                return Err(InvalidFilter::NestedComprehension);
            }
            // The range is evaluated once, before the loop.
            check(&c.iter_range, scope, place, depth)?;
            let before = scope.names.len();
            scope.names.push((&c.iter_var, true));
            scope.names.extend(c.iter_var2.as_deref().map(|v| (v, true)));
            scope.names.push((&c.accu_var, false));
            let body = [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|e| check(e, scope, Loop::Body, depth));
            scope.names.truncate(before);
            body
        }
    }
}

/// The `event` variable of one event, built once and read by the filter of
/// every hook the event goes to.
pub struct EventValue {
    context: Context<'static, 'static>,
}

impl EventValue {
    /// `event` for `event`: `id`, `name`, `org`, `createdAt` (the
    /// envelope's text, e.g. `2026-11-27T10:00:00.000Z`), `data` and
    /// `changes` (an empty map when the event has none).
    pub fn new(event: &Event) -> Result<EventValue, String> {
        let object = |text: &str| -> Result<Value, String> {
            let json: serde_json::Value = serde_json::from_str(text).map_err(|e| cut(&e.to_string()))?;
            Ok(from_json(json))
        };
        let text = |s: &str| Value::String(Arc::new(s.to_string()));
        let mut fields: HashMap<Key, Value> = HashMap::with_capacity(6);
        let mut put = |key: &str, value: Value| {
            fields.insert(Key::String(Arc::new(key.to_string())), value);
        };
        put("id", text(&event.id));
        put("name", text(event.name.as_str()));
        put("org", text(&event.org));
        put("createdAt", text(&format_created_at(event.created_at_ms)));
        put("data", object(&event.data)?);
        let changes = match &event.changes {
            Some(changes) => object(changes)?,
            None => Value::Map(Map::from(HashMap::<Key, Value>::new())),
        };
        put("changes", changes);
        let mut context = Context::with_env(ENV.clone());
        context.add_variable_from_value(EVENT_VARIABLE, Value::Map(Map::from(fields)));
        Ok(EventValue { context })
    }
}

/// A JSON value as a CEL value: numbers are `int` when they are integers
/// that fit, `uint` above `int`'s range, `double` otherwise (so
/// `event.data.count == 3` holds for `"count": 3`).
fn from_json(json: serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(Arc::new(s)),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.into_iter().map(from_json).collect())),
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .into_iter()
                .map(|(k, v)| (Key::String(Arc::new(k)), from_json(v)))
                .collect();
            Value::Map(Map::from(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::contract::event_name::EventName;

    const SPEC_EXAMPLE: &str =
        "event.name == 'kustomer.conversation.update' && event.data.attributes.priority == 'urgent'";

    fn event(name: EventName, data: &str, changes: Option<&str>) -> Event {
        Event {
            id: "evt-1".into(),
            org: "acme".into(),
            name,
            data: data.into(),
            changes: changes.map(str::to_string),
            created_at_ms: 1_795_773_600_000,
            hook: None,
            trace: None,
            trace_ignored: None,
        }
    }

    fn run(filter: &str, event: &Event) -> Result<bool, String> {
        Filter::compile(filter)
            .unwrap()
            .matches(&EventValue::new(event).unwrap())
    }

    #[test]
    fn the_spec_example_matches_urgent_conversation_updates_only() {
        let urgent = r#"{"attributes":{"priority":"urgent"}}"#;
        let low = r#"{"attributes":{"priority":"low"}}"#;
        assert_eq!(
            run(SPEC_EXAMPLE, &event(EventName::ConversationUpdate, urgent, None)),
            Ok(true)
        );
        assert_eq!(
            run(SPEC_EXAMPLE, &event(EventName::ConversationUpdate, low, None)),
            Ok(false)
        );
        // `&&` stops at the name: no error for data without the field.
        assert_eq!(run(SPEC_EXAMPLE, &event(EventName::UserCreate, "{}", None)), Ok(false));
    }

    #[test]
    fn every_event_field_is_readable() {
        let e = event(
            EventName::ConversationUpdate,
            r#"{"n":3,"big":18446744073709551615,"f":1.5,"tags":["vip","x"],"none":null}"#,
            Some(r#"{"attributes":{"status":{"before":"open","after":"done"}}}"#),
        );
        for filter in [
            "event.id == 'evt-1'",
            "event.org == 'acme'",
            "event.name.startsWith('kustomer.conversation.')",
            "event.createdAt == '2026-11-27T10:00:00.000Z'",
            "event.createdAt > '2026-01-01'",
            "event.data.n == 3 && event.data.n > 2",
            "event.data.big == 18446744073709551615u",
            "event.data.f > 1.0",
            "'vip' in event.data.tags",
            "event.data.tags.exists(t, t == 'vip')",
            "event.data.tags.filter(t, t.size() > 1).size() == 1",
            "event.data.none == null",
            "has(event.data.n) && !has(event.data.missing)",
            "event.changes.attributes.status.after == 'done'",
            "'status' in event.changes.attributes",
            "size(event.data) == 5",
        ] {
            assert_eq!(run(filter, &e), Ok(true), "{filter}");
        }
        // No changes: an empty map.
        let plain = event(EventName::ConversationUpdate, "{}", None);
        assert_eq!(run("size(event.changes) == 0", &plain), Ok(true));
    }

    #[test]
    fn the_documented_examples_work() {
        let e = event(
            EventName::ConversationUpdate,
            r#"{"attributes":{"priority":"urgent","tags":["vip"],"total":1200,"team":"emea-2"}}"#,
            Some(r#"{"attributes":{"status":{"before":"open","after":"done"}}}"#),
        );
        let plain = event(EventName::ConversationUpdate, r#"{"attributes":{"team":"us-1"}}"#, None);
        for (filter, on_e, on_plain) in [
            (SPEC_EXAMPLE, true, Err(())),
            (
                "has(event.changes.attributes) && 'status' in event.changes.attributes",
                true,
                Ok(false),
            ),
            (
                "has(event.data.attributes.tags) && 'vip' in event.data.attributes.tags",
                true,
                Ok(false),
            ),
            (
                "has(event.data.attributes.total) && event.data.attributes.total >= 1000",
                true,
                Ok(false),
            ),
            (
                "event.data.attributes.team.startsWith('emea-') && event.createdAt >= '2026-01-01'",
                true,
                Ok(false),
            ),
        ] {
            assert_eq!(run(filter, &e), Ok(on_e), "{filter}");
            assert_eq!(run(filter, &plain).map_err(|_| ()), on_plain, "{filter}");
        }
    }

    #[test]
    fn evaluation_errors_are_short_text() {
        let e = event(EventName::ConversationUpdate, r#"{"attributes":{}}"#, None);
        let err = run("event.data.attributes.priority == 'urgent'", &e).unwrap_err();
        assert!(err.contains("No such key: priority"), "{err}");
        let err = run("event.data.attributes + 1 == 2", &e).unwrap_err();
        assert!(err.len() <= MAX_ERROR_CHARS + 3, "{err}");
        let err = run("event.name", &e).unwrap_err();
        assert_eq!(err, "the filter's result is a string, not a bool");
        // A huge value quoted by an error is cut.
        let big = event(
            EventName::ConversationUpdate,
            &format!(r#"{{"s":"{}"}}"#, "a".repeat(100_000)),
            None,
        );
        let err = run("event.data.s + 1 == 2", &big).unwrap_err();
        assert!(err.chars().count() <= MAX_ERROR_CHARS + 3, "{} chars", err.len());
    }

    #[test]
    fn invalid_filters_are_refused_with_a_message_naming_the_problem() {
        let err = Filter::compile("event.name ==").unwrap_err();
        assert!(matches!(err, InvalidFilter::Syntax(_)), "{err}");
        assert!(err.to_string().starts_with("filter does not parse: 1:"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");

        assert_eq!(
            Filter::compile("evnt.name == 'x'").unwrap_err(),
            InvalidFilter::UnknownVariable("evnt".into())
        );
        assert!(
            Filter::compile("request.auth == 'x'")
                .unwrap_err()
                .to_string()
                .contains("unknown variable \"request\"")
        );
        assert_eq!(
            Filter::compile("event.data.a.exists(x, event.data.b.exists(y, y == x))").unwrap_err(),
            InvalidFilter::NestedComprehension
        );
        assert_eq!(
            Filter::compile("event.data.a.exists(x, x.all(y, y == 1))").unwrap_err(),
            InvalidFilter::NestedComprehension
        );
        assert_eq!(
            Filter::compile("event.data.a.map(x, [x, x].filter(y, y > 0))").unwrap_err(),
            InvalidFilter::NestedComprehension
        );
        assert_eq!(
            Filter::compile("event.data.a.exists(x, x == event.id)").unwrap_err(),
            InvalidFilter::EventInComprehension
        );
        assert!(matches!(
            Filter::compile("Foo{a: 1} == event").unwrap_err(),
            InvalidFilter::MessageLiteral(_)
        ));
        let long = format!("event.id == '{}'", "a".repeat(MAX_FILTER_CHARS));
        assert!(matches!(Filter::compile(&long).unwrap_err(), InvalidFilter::TooLong(_)));

        let copies = format!("size({}event.data.s) > 0", "event.data.s + ".repeat(MAX_REFERENCES));
        assert_eq!(Filter::compile(&copies).unwrap_err(), InvalidFilter::TooDeep);
        let copies = format!("size([{}event]) > 0", "event, ".repeat(MAX_REFERENCES));
        assert_eq!(Filter::compile(&copies).unwrap_err(), InvalidFilter::TooManyReferences);
        let copies = format!("event.data.l.map(x, [{}x]).size() > 0", "x, ".repeat(MAX_REFERENCES));
        assert_eq!(Filter::compile(&copies).unwrap_err(), InvalidFilter::TooManyReferences);
        Filter::compile(&format!("size([{}event]) > 0", "event, ".repeat(MAX_REFERENCES - 1))).unwrap();

        // Chains of comprehensions, and shadowing `event` by a loop variable, are fine.
        Filter::compile("event.data.a.filter(x, x > 1).exists(x, x > 5)").unwrap();
        Filter::compile("event.data.a.exists(event, event > 1)").unwrap();
    }

    #[test]
    fn deep_filters_are_refused_without_exhausting_the_stack() {
        for deep in [
            format!("{}true{}", "(".repeat(500), ")".repeat(500)),
            format!("{}true", "!".repeat(1000)),
            format!("event.id == 'a'{}", " || event.id == 'a'".repeat(70)),
            format!("{}true", "-".repeat(1000)),
            format!("{}true{}", "true ? (".repeat(120), ") : false".repeat(120)),
            format!("event{}", ".a".repeat(500)),
            format!("{}1{} == 1", "[".repeat(400), "]".repeat(400)),
        ] {
            // Either refused or compiled; never a crash.
            if let Ok(f) = Filter::compile(&deep) {
                let e = event(EventName::UserCreate, "{}", None);
                let _ = f.matches(&EventValue::new(&e).unwrap());
            }
        }
        assert_eq!(
            Filter::compile(&format!("{}1 == 1", "1 + ".repeat(200))).unwrap_err(),
            InvalidFilter::TooDeep
        );
        // At the limit, for each kind of node (the deepest of each shape
        // that compiles): evaluated within 1 MiB of stack (half a tokio
        // worker's) in a debug build.
        type Shape = fn(usize) -> String;
        let shapes: [Shape; 6] = [
            |n| format!("{}event.id == 'evt-1'", "!".repeat(n)),
            |n| format!("{}1{} == 1", "[".repeat(n), "]".repeat(n)),
            |n| format!("{}1 == 30", "1 + ".repeat(n)),
            |n| format!("{}true{}", "true ? (".repeat(n), ") : false".repeat(n)),
            |n| format!("{}1{} != 1", "{'a': ".repeat(n), "}".repeat(n)),
            |n| format!("size({}event{}) > 0", "string(".repeat(n), ")".repeat(n)),
        ];
        let deepest: Vec<Filter> = shapes
            .iter()
            .map(|shape| {
                let n = (1..)
                    .take_while(|&n| Filter::compile(&shape(n)).is_ok())
                    .last()
                    .unwrap();
                Filter::compile(&shape(n)).unwrap()
            })
            .collect();
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || {
                let value = EventValue::new(&event(EventName::UserCreate, "{}", None)).unwrap();
                for filter in deepest {
                    // Whatever the result, the stack holds.
                    let _ = filter.matches(&value);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// The worst case the checks allow, timed: a 1 KiB filter whose one
    /// comprehension runs over every element of a 1 MiB event, plus the
    /// building of `event` itself (once per event). The numbers are
    /// printed (`cargo test --release --lib filter -- --nocapture`) and
    /// quoted in docs/src/filters.md; the bound asserted is loose, to hold
    /// on a slow CI machine in a debug build.
    #[test]
    fn a_filter_costs_at_most_linear_time_in_the_event() {
        // Just under 1 MiB: as many short strings as fit.
        let mut list = String::new();
        let mut count = 0;
        while list.len() < 1_040_000 {
            list.push_str(&format!("\"v{count}\","));
            count += 1;
        }
        list.pop();
        let data = format!("{{\"items\":[{list}]}}");
        assert!(data.len() > 1_000_000 && data.len() < 1_048_576, "{}", data.len());
        let e = event(EventName::ConversationUpdate, &data, None);

        // One comprehension doing as much per element as the checks allow:
        // all the references but the range's, each in a string operation.
        let mut body = String::from("x.size() > 0");
        // (The `filter` macro adds one reference of its own.)
        for _ in 0..(MAX_REFERENCES - 3) / 3 {
            body.push_str(" && x.startsWith('v') && x.contains('9') == x.contains('9')");
        }
        let filter = format!("event.data.items.filter(x, {body}).size() == -1");
        assert!(filter.len() <= MAX_FILTER_CHARS, "{}", filter.len());
        let filter = Filter::compile(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));

        let started = Instant::now();
        let value = EventValue::new(&e).unwrap();
        let build = started.elapsed();
        let started = Instant::now();
        assert_eq!(filter.matches(&value), Ok(false));
        let evaluate = started.elapsed();
        // A plain comprehension over the same elements.
        let plain = Filter::compile("event.data.items.exists(x, x == 'none')").unwrap();
        let started = Instant::now();
        assert_eq!(plain.matches(&value), Ok(false));
        let plain_loop = started.elapsed();
        let spec_example = Filter::compile(SPEC_EXAMPLE).unwrap();
        let started = Instant::now();
        assert!(spec_example.matches(&value).is_err(), "no attributes in this event");
        let simple = started.elapsed();
        let small_event = event(
            EventName::ConversationUpdate,
            r#"{"type":"conversation","id":"c1","attributes":{"priority":"urgent","status":"open","tags":["a","b"]}}"#,
            None,
        );
        let started = Instant::now();
        for _ in 0..1000 {
            EventValue::new(&small_event).unwrap();
        }
        let build_small = started.elapsed() / 1000;
        let small = EventValue::new(&small_event).unwrap();
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(spec_example.matches(&small), Ok(true));
        }
        let per_small = started.elapsed() / 1000;
        println!(
            "{} byte event: building event {build:?}; {} byte filter with one comprehension over {count} elements {evaluate:?} (`exists(x, x == 'none')`: {plain_loop:?}); the contract's example {simple:?} (on a small event {per_small:?}, building that event {build_small:?})",
            data.len(),
            filter.source().len()
        );
        assert!(build + evaluate < Duration::from_secs(60), "{build:?} + {evaluate:?}");
    }
}

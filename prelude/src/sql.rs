//! SQL functions: [`sql_function!`](crate::sql_function) exports a plain Rust fn so that the
//! gateway's SQL engine can call it on a batch of rows, and [`sql_aggregate!`](crate::sql_aggregate)
//! exports an [`SqlAggregate`] so that it can aggregate groups of rows in parallel (the wire
//! formats are in `sandbox/ABI.md`).

use crate::value::Value;

/// A type a SQL function takes or returns, and how it travels: 8 little-endian bytes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a SQL type",
    note = "functions declared with `sql_function!` and `sql_aggregate!` take and return `f64`, `i64` and `bool`"
)]
pub trait SqlType: Copy {
    /// Its type byte on the wire: 0 = f64, 1 = i64, 2 = bool.
    const CODE: u8;
    /// Its name in the export name.
    const NAME: &'static str;
    /// Reads a value from its 8 bytes.
    fn from_bits(bits: u64) -> Self;
    /// Writes a value as 8 bytes.
    fn to_bits(self) -> u64;
}

impl SqlType for f64 {
    const CODE: u8 = 0;
    const NAME: &'static str = "f64";
    fn from_bits(bits: u64) -> Self {
        f64::from_bits(bits)
    }
    fn to_bits(self) -> u64 {
        f64::to_bits(self)
    }
}

impl SqlType for i64 {
    const CODE: u8 = 1;
    const NAME: &'static str = "i64";
    fn from_bits(bits: u64) -> Self {
        bits as i64
    }
    fn to_bits(self) -> u64 {
        self as u64
    }
}

impl SqlType for bool {
    const CODE: u8 = 2;
    const NAME: &'static str = "bool";
    fn from_bits(bits: u64) -> Self {
        bits != 0
    }
    fn to_bits(self) -> u64 {
        u64::from(self)
    }
}

/// Whether `name` is how `T` is spelled in an export name (refuses aliases such as `type C = f64`,
/// which would give the export a name the host cannot read).
#[doc(hidden)]
pub const fn sql_type_named<T: SqlType>(name: &str) -> bool {
    let (a, b) = (name.as_bytes(), T::NAME.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The body of an `sbx_sql__*` export: runs `f` on each row of the batch at `ptr..ptr + len`
/// whose arguments are all valid, and returns `out_ptr << 32 | out_len` of the result column.
///
/// # Safety
/// `ptr` must point at `len` readable bytes (the host's buffer from `sbx_prepare`).
#[doc(hidden)]
pub unsafe fn sql_invoke<R: SqlType>(
    ptr: *const u8,
    len: usize,
    name: &str,
    types: &[u8],
    f: impl Fn(&[u64]) -> R,
) -> u64 {
    crate::abi::install_panic_hook();
    // SAFETY: per the contract above.
    let input = unsafe { input(ptr, len) };
    crate::abi::output(run(input, name, types, f))
}

/// The host's input buffer as a slice.
///
/// # Safety
/// `ptr` must point at `len` readable bytes, or `len` be 0.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: per the contract above.
    if ptr.is_null() || len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, len) } }
}

/// Input: a [`Batch`]. Output: `u8 type`, `rows` validity bytes, `rows * 8` value bytes (0 where null).
fn run<R: SqlType>(input: &[u8], name: &str, types: &[u8], f: impl Fn(&[u64]) -> R) -> Vec<u8> {
    let signature = || format!("SQL function {name}({}) -> {}", type_names(types), R::NAME);
    let (batch, rest) = Batch::read(input, types, &signature);
    let expected = input.len() - rest.len();
    assert!(rest.is_empty(), "{}: input of {} bytes, expected {expected}", signature(), input.len());
    let mut args = vec![0u64; types.len()];
    column((0..batch.rows).map(|row| batch.row(row, &mut args).then(|| f(&args))), batch.rows)
}

/// A result column: `u8 type`, `rows` validity bytes, `rows * 8` value bytes (0 where null).
fn column<R: SqlType>(values: impl Iterator<Item = Option<R>>, rows: usize) -> Vec<u8> {
    let out_len = rows.checked_mul(9).and_then(|n| n.checked_add(1)).expect("too many rows");
    let mut out = vec![0u8; out_len];
    out[0] = R::CODE;
    let (valid, bytes) = out[1..].split_at_mut(rows);
    for (row, value) in values.enumerate().take(rows) {
        if let Some(value) = value {
            valid[row] = 1;
            bytes[8 * row..8 * row + 8].copy_from_slice(&value.to_bits().to_le_bytes());
        }
    }
    out
}

/// Argument columns on the wire: `u32 rows, u32 cols`, then per column `u8 type`, `rows` validity
/// bytes, `rows * 8` value bytes.
struct Batch<'a> {
    rows: usize,
    /// Per column: (validity, values).
    columns: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Batch<'a> {
    /// Reads a batch of columns of `types` from the start of `input`; returns it and the bytes
    /// after it. Panics, naming `signature()`, on a short input or a column of another type.
    fn read(input: &'a [u8], types: &[u8], signature: &dyn Fn() -> String) -> (Self, &'a [u8]) {
        let (Some(rows), Some(cols)) = (word(input, 0), word(input, 4)) else {
            panic!("{}: an input of {} bytes has no header", signature(), input.len())
        };
        assert!(cols == types.len(), "{}: called with {cols} arguments", signature());
        let expected = 8 + cols as u64 * (1 + 9 * rows as u64);
        assert!(input.len() as u64 >= expected, "{}: input of {} bytes, expected {expected}", signature(), input.len());
        // Each column: (validity, values); every offset is within the input, so within usize.
        let column = 1 + 9 * rows;
        let columns = (0..cols)
            .map(|i| {
                let bytes = &input[8 + i * column..][..column];
                if bytes[0] != types[i] {
                    panic!("{}: argument {} is {}", signature(), i + 1, type_name(bytes[0]));
                }
                bytes[1..].split_at(rows)
            })
            .collect();
        (Self { rows, columns }, &input[8 + cols * column..])
    }

    /// Whether every argument of `row` is valid; if so, their bits are in `args`.
    fn row(&self, row: usize, args: &mut [u64]) -> bool {
        if !self.columns.iter().all(|(valid, _)| valid[row] != 0) {
            return false;
        }
        for (arg, (_, column)) in args.iter_mut().zip(&self.columns) {
            let b = &column[8 * row..8 * row + 8];
            *arg = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
        true
    }
}

/// The little-endian u32 at `at`, if the input is long enough.
fn word(input: &[u8], at: usize) -> Option<usize> {
    input.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn type_names(types: &[u8]) -> String {
    types.iter().map(|&t| type_name(t)).collect::<Vec<_>>().join(", ")
}

fn type_name(code: u8) -> &'static str {
    match code {
        0 => "f64",
        1 => "i64",
        2 => "bool",
        _ => "an unknown type",
    }
}

/// Makes a plain Rust fn callable from SQL: `sql_function!(name(arg types) -> return type)`, with
/// types `f64`, `i64` and `bool`. A query then calls `name(...)` on columns; a row with a null
/// argument gives null without calling the fn. It works at the crate root and inside a fn body
/// (a cell), and exports `sbx_sql__<name>__<arg types joined by _>__<return type>`.
///
/// ```ignore
/// fn kelvin(c: f64) -> f64 { c + 273.15 }
/// sql_function!(kelvin(f64) -> f64); // exports sbx_sql__kelvin__f64__f64
/// fn warm(t: f64, limit: f64) -> bool { t > limit }
/// sql_function!(warm(f64, f64) -> bool); // exports sbx_sql__warm__f64_f64__bool
/// ```
#[macro_export]
macro_rules! sql_function {
    (@export $export:expr, $name:ident($($arg:ident),*) -> $ret:ident) => {
        const _: () = {
            $(::core::assert!(
                $crate::sql_type_named::<$arg>(::core::stringify!($arg)),
                "sql_function!: write the argument types as f64, i64 or bool"
            );)*
            ::core::assert!(
                $crate::sql_type_named::<$ret>(::core::stringify!($ret)),
                "sql_function!: write the return type as f64, i64 or bool"
            );
            /// # Safety
            /// Called by the host only, with a buffer from `sbx_prepare`.
            #[unsafe(export_name = $export)]
            #[allow(unused_mut, unused_variables)]
            unsafe extern "C" fn export(ptr: *const u8, len: usize) -> u64 {
                // SAFETY: forwarded contract.
                unsafe {
                    $crate::sql_invoke::<$ret>(
                        ptr,
                        len,
                        ::core::stringify!($name),
                        &[$(<$arg as $crate::SqlType>::CODE),*],
                        |args: &[u64]| {
                            let mut args = args.iter();
                            $name($(<$arg as $crate::SqlType>::from_bits(*args.next().unwrap())),*)
                        },
                    )
                }
            }
        };
    };
    ($name:ident() -> $ret:ident) => {
        $crate::sql_function!(
            @export ::core::concat!("sbx_sql__", ::core::stringify!($name), "____", ::core::stringify!($ret)),
            $name() -> $ret
        );
    };
    ($name:ident($first:ident $(, $rest:ident)* $(,)?) -> $ret:ident) => {
        $crate::sql_function!(
            @export ::core::concat!(
                "sbx_sql__", ::core::stringify!($name),
                "__", ::core::stringify!($first), $("_", ::core::stringify!($rest),)*
                "__", ::core::stringify!($ret)
            ),
            $name($first $(, $rest)*) -> $ret
        );
    };
}

/// An aggregate callable from SQL over argument types `Args` (`f64` for one argument,
/// `(f64, f64)` for two, ...): its state starts as `Default`, takes each row with
/// [`update`](Self::update), is combined with states from other rows with
/// [`merge`](Self::merge), and becomes the group's value with [`finish`](Self::finish). States
/// travel between instances as their [`Value`] encoding, so a query can aggregate in parallel:
/// `merge` must give the same result (up to rounding) in any grouping and order.
///
/// Declare it for SQL with [`sql_aggregate!`](crate::sql_aggregate).
///
/// ```ignore
/// record! { #[derive(Default)] struct GeoMean { n: u64, logs: f64 } }
/// impl SqlAggregate<f64> for GeoMean {
///     type Output = f64;
///     fn update(&mut self, x: f64) { if x > 0.0 { self.n += 1; self.logs += x.ln(); } }
///     fn merge(&mut self, other: Self) { self.n += other.n; self.logs += other.logs; }
///     fn finish(self) -> Option<f64> { (self.n > 0).then(|| (self.logs / self.n as f64).exp()) }
/// }
/// sql_aggregate!(geomean(f64) -> f64 = GeoMean);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a SQL aggregate over `{Args}`",
    note = "implement `SqlAggregate<{Args}>` for it (one argument: `SqlAggregate<f64>`, two: `SqlAggregate<(f64, f64)>`), with `type Output`, `update`, `merge` and `finish`; its state must be `Default` and a `Value` (declare it with `record!` and `#[derive(Default)]`)"
)]
pub trait SqlAggregate<Args>: Default + Value {
    /// The aggregate's SQL type (`f64`, `i64` or `bool`).
    type Output: SqlType;
    /// Takes one row whose arguments are all non-null (rows with a null argument are skipped).
    fn update(&mut self, args: Args);
    /// Takes in the state of other rows of the same group.
    fn merge(&mut self, other: Self);
    /// The group's value; `None` is SQL's NULL. A group whose rows were all skipped (or a query
    /// with no rows) finishes its `Default` state.
    fn finish(self) -> Option<Self::Output>;
}

/// The argument types of an aggregate as a tuple (`(f64,)`, `(f64, i64)`), and the form
/// [`SqlAggregate::update`] takes them in (`f64`, `(f64, i64)`).
#[doc(hidden)]
pub trait SqlArgs {
    /// What `update` takes.
    type Args;
    /// The type bytes of the arguments.
    const CODES: &'static [u8];
    /// The arguments of a row from their bits.
    fn read(bits: &[u64]) -> Self::Args;
}

impl<A: SqlType> SqlArgs for (A,) {
    type Args = A;
    const CODES: &'static [u8] = &[A::CODE];
    fn read(bits: &[u64]) -> A {
        A::from_bits(bits[0])
    }
}

macro_rules! sql_args {
    ($($t:ident $i:tt),+) => {
        impl<$($t: SqlType),+> SqlArgs for ($($t,)+) {
            type Args = ($($t,)+);
            const CODES: &'static [u8] = &[$($t::CODE),+];
            fn read(bits: &[u64]) -> Self::Args {
                ($($t::from_bits(bits[$i]),)+)
            }
        }
    };
}
sql_args!(A 0, B 1);
sql_args!(A 0, B 1, C 2);
sql_args!(A 0, B 1, C 2, D 3);
sql_args!(A 0, B 1, C 2, D 3, E 4);
sql_args!(A 0, B 1, C 2, D 3, E 4, F 5);

/// An `sbx_sqlagg__*` call's operation (the first word of its input).
const UPDATE: usize = 0;
const MERGE: usize = 1;
const FINISH: usize = 2;

/// The state sent for a group that has seen no row yet (instead of a length).
const FRESH: usize = u32::MAX as usize;

/// The body of an `sbx_sqlagg__*` export: updates, merges or finishes a list of group states
/// (the wire format is in `sandbox/ABI.md`) and returns `out_ptr << 32 | out_len`.
///
/// # Safety
/// `ptr` must point at `len` readable bytes (the host's buffer from `sbx_prepare`).
#[doc(hidden)]
pub unsafe fn sql_aggregate_invoke<S, T, R>(ptr: *const u8, len: usize, name: &str) -> u64
where
    T: SqlArgs,
    S: SqlAggregate<T::Args, Output = R>,
    R: SqlType,
{
    crate::abi::install_panic_hook();
    // SAFETY: per the contract above.
    let input = unsafe { input(ptr, len) };
    crate::abi::output(aggregate::<S, T, R>(input, name))
}

/// What an `sbx_sqlagg__*` export returns for `input`, as bytes: the same code, callable off wasm
/// (the host's tests run it natively).
#[doc(hidden)]
pub fn sql_aggregate_bytes<S, T, R>(input: &[u8], name: &str) -> Vec<u8>
where
    T: SqlArgs,
    S: SqlAggregate<T::Args, Output = R>,
    R: SqlType,
{
    aggregate::<S, T, R>(input, name)
}

/// Input: `u32 op, u32 groups`, the groups' states (`u32 len` and the encoding, or `u32::MAX`
/// for a fresh one), then for update a [`Batch`] and, with more than one group, a `u32` group
/// per row; for merge `u32 n` and `n` times `u32 group` and a state; for finish nothing.
/// Output: `u32 groups` and the new states (update, merge), or the result column (finish).
fn aggregate<S, T, R>(input: &[u8], name: &str) -> Vec<u8>
where
    T: SqlArgs,
    S: SqlAggregate<T::Args, Output = R>,
    R: SqlType,
{
    let signature = || format!("SQL aggregate {name}({}) -> {}", type_names(T::CODES), R::NAME);
    let mut at = 0;
    let next_word = |input: &[u8], at: &mut usize| {
        let w =
            word(input, *at).unwrap_or_else(|| panic!("{}: input of {} bytes ends early", signature(), input.len()));
        *at += 4;
        w
    };
    let next_state = |input: &[u8], at: &mut usize| match next_word(input, at) {
        FRESH => None,
        len => {
            let end = at.checked_add(len).filter(|&end| end <= input.len());
            let end = end.unwrap_or_else(|| panic!("{}: a state past the input", signature()));
            let bytes = &input[*at..end];
            *at = end;
            Some(S::decode(bytes))
        }
    };
    let (op, groups) = (next_word(input, &mut at), next_word(input, &mut at));
    let mut states: Vec<S> = (0..groups).map(|_| next_state(input, &mut at).unwrap_or_default()).collect();
    let group = |g: usize| {
        assert!(g < groups, "{}: group {g} of {groups}", signature());
        g
    };
    match op {
        UPDATE => {
            let (batch, rest) = Batch::read(&input[at..], T::CODES, &signature);
            let indices = (groups != 1).then_some(rest);
            assert!(
                rest.len() == indices.map_or(0, |_| 4 * batch.rows),
                "{}: {} bytes of group indices for {} rows",
                signature(),
                rest.len(),
                batch.rows
            );
            let mut args = vec![0u64; T::CODES.len()];
            for row in 0..batch.rows {
                if batch.row(row, &mut args) {
                    let g = indices.map_or(0, |idx| word(idx, 4 * row).unwrap_or(usize::MAX));
                    states[group(g)].update(T::read(&args));
                }
            }
        }
        MERGE => {
            let n = next_word(input, &mut at);
            for _ in 0..n {
                let g = group(next_word(input, &mut at));
                if let Some(other) = next_state(input, &mut at) {
                    states[g].merge(other);
                }
            }
            assert!(at == input.len(), "{}: {} bytes after the states to merge", signature(), input.len() - at);
        }
        FINISH => {
            assert!(at == input.len(), "{}: {} bytes after the states to finish", signature(), input.len() - at);
            return column(states.into_iter().map(S::finish), groups);
        }
        op => panic!("{}: unknown operation {op}", signature()),
    }
    let mut out = Vec::with_capacity(4 + 12 * groups);
    out.extend_from_slice(&(groups as u32).to_le_bytes());
    for state in &states {
        crate::value_field_encode(state, &mut out);
    }
    out
}

/// Makes a type implementing [`SqlAggregate`] callable from SQL as an aggregate function:
/// `sql_aggregate!(name(arg types) -> return type = State)`, with types `f64`, `i64` and `bool`
/// and one to six arguments. A query then calls `name(...)`, with or without `GROUP BY`; rows
/// with a null argument are skipped. It works at the crate root and inside a fn body (a cell),
/// and exports `sbx_sqlagg__<name>__<arg types joined by _>__<return type>`.
///
/// ```ignore
/// sql_aggregate!(geomean(f64) -> f64 = GeoMean);       // SqlAggregate<f64> for GeoMean
/// sql_aggregate!(wmean(f64, f64) -> f64 = WeightedMean); // SqlAggregate<(f64, f64)>
/// ```
#[macro_export]
macro_rules! sql_aggregate {
    ($name:ident() -> $ret:ident = $state:ty) => {
        ::core::compile_error!(
            "sql_aggregate!: an aggregate takes at least one argument (count rows with SQL's COUNT(*))"
        );
    };
    ($name:ident($first:ident $(, $rest:ident)* $(,)?) -> $ret:ident = $state:ty) => {
        const _: () = {
            $crate::sql_aggregate!(@types $first $($rest)*; $ret);
            /// # Safety
            /// Called by the host only, with a buffer from `sbx_prepare`.
            #[unsafe(export_name = ::core::concat!(
                "sbx_sqlagg__", ::core::stringify!($name),
                "__", ::core::stringify!($first), $("_", ::core::stringify!($rest),)*
                "__", ::core::stringify!($ret)
            ))]
            unsafe extern "C" fn export(ptr: *const u8, len: usize) -> u64 {
                // SAFETY: forwarded contract.
                unsafe {
                    $crate::sql_aggregate_invoke::<$state, ($first, $($rest,)*), $ret>(
                        ptr,
                        len,
                        ::core::stringify!($name),
                    )
                }
            }
        };
    };
    (@types $($arg:ident)*; $ret:ident) => {
        $(::core::assert!(
            $crate::sql_type_named::<$arg>(::core::stringify!($arg)),
            "sql_aggregate!: write the argument types as f64, i64 or bool"
        );)*
        ::core::assert!(
            $crate::sql_type_named::<$ret>(::core::stringify!($ret)),
            "sql_aggregate!: write the return type as f64, i64 or bool"
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kelvin(c: f64) -> f64 {
        c + 273.15
    }
    crate::sql_function!(kelvin(f64) -> f64);

    fn pi() -> f64 {
        std::f64::consts::PI
    }
    crate::sql_function!(pi() -> f64);

    unsafe extern "C" {
        #[link_name = "sbx_sql__kelvin__f64__f64"]
        fn kelvin_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__pi____f64"]
        fn pi_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__warm__f64_f64__bool"]
        fn warm_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sql__pick__bool_i64_i64__i64"]
        fn pick_export(ptr: *const u8, len: usize) -> u64;
    }

    /// A column: its type and its rows (None = null).
    type Column<'a> = (u8, &'a [Option<u64>]);

    fn encode(rows: usize, columns: &[Column]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(rows as u32).to_le_bytes());
        out.extend_from_slice(&(columns.len() as u32).to_le_bytes());
        for (code, values) in columns {
            assert_eq!(values.len(), rows);
            out.push(*code);
            out.extend(values.iter().map(|v| u8::from(v.is_some())));
            // A null's bytes are whatever the host had there.
            values.iter().for_each(|v| out.extend_from_slice(&v.unwrap_or(0xdead_beef).to_le_bytes()));
        }
        out
    }

    /// Calls an export as the host does: `sbx_prepare`, write, call; returns (type, rows).
    fn call(export: unsafe extern "C" fn(*const u8, usize) -> u64, input: &[u8]) -> (u8, Vec<Option<u64>>) {
        let out = call_raw(export, input);
        let rows = (out.len() - 1) / 9;
        assert_eq!(out.len(), 1 + 9 * rows);
        let values = (0..rows)
            .map(|i| {
                let bits = u64::from_le_bytes(out[1 + rows + 8 * i..][..8].try_into().unwrap());
                match out[1 + i] {
                    1 => Some(bits),
                    0 => {
                        assert_eq!(bits, 0);
                        None
                    }
                    v => panic!("validity byte {v}"),
                }
            })
            .collect();
        (out[0], values)
    }

    fn f(v: f64) -> Option<u64> {
        Some(v.to_bits())
    }

    #[test]
    fn one_f64_argument_with_nulls() {
        let input = encode(3, &[(0, &[f(0.0), None, f(-273.15)])]);
        let (code, out) = call(kelvin_export, &input);
        assert_eq!((code, out), (0, vec![f(273.15), None, f(0.0)]));
    }

    #[test]
    fn no_arguments_and_no_rows() {
        let (code, out) = call(pi_export, &encode(2, &[]));
        assert_eq!((code, out), (0, vec![f(std::f64::consts::PI); 2]));
        assert_eq!(call(kelvin_export, &encode(0, &[(0, &[])])), (0, vec![]));
    }

    #[test]
    fn inside_a_fn_body_two_and_three_arguments_bool_and_i64() {
        fn warm(t: f64, limit: f64) -> bool {
            t > limit
        }
        crate::sql_function!(warm(f64, f64) -> bool);
        fn pick(first: bool, a: i64, b: i64) -> i64 {
            if first { a } else { b }
        }
        crate::sql_function!(pick(bool, i64, i64) -> i64);

        let input = encode(3, &[(0, &[f(20.0), f(5.0), None]), (0, &[f(10.0), f(10.0), f(0.0)])]);
        assert_eq!(call(warm_export, &input), (2, vec![Some(1), Some(0), None]));

        let neg = |v: i64| Some(v as u64);
        let input = encode(
            4,
            &[(2, &[Some(1), Some(0), None, Some(1)]), (1, &[neg(-7); 4]), (1, &[neg(8), neg(9), neg(10), None])],
        );
        assert_eq!(call(pick_export, &input), (1, vec![neg(-7), neg(9), None, None]));
    }

    fn kelvin_bits(args: &[u64]) -> f64 {
        kelvin(f64::from_bits(args[0]))
    }

    #[test]
    #[should_panic(expected = "SQL function kelvin(f64) -> f64: argument 1 is i64")]
    fn mismatched_types_panic() {
        // The export itself aborts on a panic (it is `extern "C"`); its body unwinds.
        run(&encode(1, &[(1, &[Some(3)])]), "kelvin", &[0], kelvin_bits);
    }

    #[test]
    #[should_panic(expected = "SQL function kelvin(f64) -> f64: called with 2 arguments")]
    fn mismatched_arity_panics() {
        run(&encode(1, &[(0, &[f(1.0)]), (0, &[f(2.0)])]), "kelvin", &[0], kelvin_bits);
    }

    #[test]
    #[should_panic(expected = "input of 12 bytes, expected 18")]
    fn short_input_panics() {
        run(&encode(1, &[(0, &[f(1.0)])])[..12], "kelvin", &[0], kelvin_bits);
    }

    #[test]
    fn type_names() {
        assert!(sql_type_named::<f64>("f64") && sql_type_named::<bool>("bool"));
        assert!(!sql_type_named::<i64>("I64") && !sql_type_named::<i64>("i6"));
    }

    // Aggregates: a geometric mean, a weighted mean (two arguments), a count of true values (bool
    // in, i64 out).

    crate::record! {
        #[derive(Debug, Default, PartialEq)]
        struct GeoMean { n: u64, logs: f64 }
    }
    impl SqlAggregate<f64> for GeoMean {
        type Output = f64;
        fn update(&mut self, x: f64) {
            if x > 0.0 {
                self.n += 1;
                self.logs += x.ln();
            }
        }
        fn merge(&mut self, other: Self) {
            self.n += other.n;
            self.logs += other.logs;
        }
        fn finish(self) -> Option<f64> {
            (self.n > 0).then(|| (self.logs / self.n as f64).exp())
        }
    }
    crate::sql_aggregate!(geomean(f64) -> f64 = GeoMean);

    unsafe extern "C" {
        #[link_name = "sbx_sqlagg__geomean__f64__f64"]
        fn geomean_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sqlagg__wmean__f64_f64__f64"]
        fn wmean_export(ptr: *const u8, len: usize) -> u64;
        #[link_name = "sbx_sqlagg__trues__bool__i64"]
        fn trues_export(ptr: *const u8, len: usize) -> u64;
    }

    fn state<S: Value>(s: &S) -> Vec<u8> {
        let mut out = Vec::new();
        s.encode(&mut out);
        out
    }

    /// `u32 op, u32 groups`, the states (`None` = fresh), then `rest`.
    fn agg_input(op: u32, states: &[Option<Vec<u8>>], rest: &[u8]) -> Vec<u8> {
        let mut out = op.to_le_bytes().to_vec();
        out.extend_from_slice(&(states.len() as u32).to_le_bytes());
        for s in states {
            match s {
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
        out.extend_from_slice(rest);
        out
    }

    fn update_input(states: &[Option<Vec<u8>>], rows: usize, columns: &[Column], groups: &[u32]) -> Vec<u8> {
        let mut rest = encode(rows, columns);
        groups.iter().for_each(|g| rest.extend_from_slice(&g.to_le_bytes()));
        agg_input(0, states, &rest)
    }

    fn merge_input(states: &[Option<Vec<u8>>], others: &[(u32, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut rest = (others.len() as u32).to_le_bytes().to_vec();
        for (g, s) in others {
            rest.extend_from_slice(&g.to_le_bytes());
            match s {
                Some(bytes) => {
                    rest.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    rest.extend_from_slice(bytes);
                }
                None => rest.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
        agg_input(1, states, &rest)
    }

    /// Calls an aggregate export as the host does; returns the raw output.
    fn call_raw(export: unsafe extern "C" fn(*const u8, usize) -> u64, input: &[u8]) -> Vec<u8> {
        let ptr = crate::abi::prepare(input.len());
        // SAFETY: `prepare` gave at least `input.len()` writable bytes.
        let packed = unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), ptr, input.len());
            export(ptr, input.len())
        };
        let out = crate::abi::last_output();
        assert_eq!((packed & 0xffff_ffff) as usize, out.len());
        out
    }

    /// The states of an update or merge output.
    fn states_of(out: &[u8]) -> Vec<Option<Vec<u8>>> {
        let n = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        let mut at = 4;
        let states = (0..n)
            .map(|_| {
                let len = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize;
                at += 4 + len;
                Some(out[at - len..at].to_vec())
            })
            .collect();
        assert_eq!(at, out.len());
        states
    }

    #[test]
    fn an_aggregate_updates_merges_and_finishes_groups() {
        let xs = [2.0, 8.0, -1.0, 3.0, 5.0];
        // Two groups: rows 0, 1, 2 (a null and a negative, which the aggregate skips) and 3, 4.
        let column = [f(xs[0]), f(xs[1]), None, f(xs[2]), f(xs[3])];
        let input = update_input(&[None, None], 5, &[(0, &column)], &[0, 0, 0, 1, 1]);
        let states = states_of(&call_raw(geomean_export, &input));
        assert_eq!(states.len(), 2);
        assert_eq!(GeoMean::decode(states[0].as_ref().unwrap()), GeoMean { n: 2, logs: 2f64.ln() + 8f64.ln() });
        // One more row for group 1 in a later batch (one group: no indices), then a merge of
        // group 1 into group 0, then finish with a fresh third group.
        let input = update_input(&states[1..], 1, &[(0, &[f(xs[4])])], &[]);
        let one = states_of(&call_raw(geomean_export, &input));
        let merged =
            states_of(&call_raw(geomean_export, &merge_input(&states[..1], &[(0, one[0].clone()), (0, None)])));
        let finished = call(geomean_export, &agg_input(2, &[merged[0].clone(), one[0].clone(), None], &[]));
        let want = |v: &[f64]| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp();
        let got: Vec<f64> = finished.1[..2].iter().map(|v| f64::from_bits(v.unwrap())).collect();
        assert_eq!(finished.0, 0);
        assert!((got[0] - want(&[2.0, 8.0, 3.0, 5.0])).abs() < 1e-12, "{got:?}");
        assert!((got[1] - want(&[3.0, 5.0])).abs() < 1e-12, "{got:?}");
        assert_eq!(finished.1[2], None, "a group with no rows is NULL");
    }

    #[test]
    fn aggregates_of_two_arguments_inside_a_fn_body() {
        crate::record! {
            #[derive(Default)]
            struct WeightedMean { sum: f64, weight: f64 }
        }
        impl SqlAggregate<(f64, f64)> for WeightedMean {
            type Output = f64;
            fn update(&mut self, (x, w): (f64, f64)) {
                self.sum += x * w;
                self.weight += w;
            }
            fn merge(&mut self, other: Self) {
                self.sum += other.sum;
                self.weight += other.weight;
            }
            fn finish(self) -> Option<f64> {
                (self.weight != 0.0).then(|| self.sum / self.weight)
            }
        }
        crate::sql_aggregate!(wmean(f64, f64) -> f64 = WeightedMean);
        #[derive(Default)]
        struct Trues(i64);
        impl Value for Trues {
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out);
            }
            fn decode(bytes: &[u8]) -> Self {
                Self(i64::decode(bytes))
            }
            fn to_json(&self, out: &mut String) {
                self.0.to_json(out);
            }
        }
        impl SqlAggregate<bool> for Trues {
            type Output = i64;
            fn update(&mut self, b: bool) {
                self.0 += i64::from(b);
            }
            fn merge(&mut self, other: Self) {
                self.0 += other.0;
            }
            fn finish(self) -> Option<i64> {
                Some(self.0)
            }
        }
        crate::sql_aggregate!(trues(bool) -> i64 = Trues);

        // A null weight or value skips the row.
        let values = [f(1.0), f(2.0), f(3.0), None];
        let weights = [f(1.0), f(3.0), None, f(5.0)];
        let input = update_input(&[None], 4, &[(0, &values), (0, &weights)], &[]);
        let states = states_of(&call_raw(wmean_export, &input));
        assert_eq!(call(wmean_export, &agg_input(2, &states, &[])), (0, vec![f(7.0 / 4.0)]));

        let input = update_input(&[None, None], 3, &[(2, &[Some(1), Some(1), Some(0)])], &[1, 0, 1]);
        let states = states_of(&call_raw(trues_export, &input));
        assert_eq!(call(trues_export, &agg_input(2, &states, &[])), (1, vec![Some(1), Some(1)]));
    }

    fn geomean_run(input: &[u8]) -> Vec<u8> {
        aggregate::<GeoMean, (f64,), f64>(input, "geomean")
    }

    #[test]
    #[should_panic(expected = "SQL aggregate geomean(f64) -> f64: argument 1 is i64")]
    fn aggregate_mismatched_types_panic() {
        geomean_run(&update_input(&[None], 1, &[(1, &[Some(3)])], &[]));
    }

    #[test]
    #[should_panic(expected = "SQL aggregate geomean(f64) -> f64: group 2 of 2")]
    fn aggregate_group_out_of_range_panics() {
        geomean_run(&update_input(&[None, None], 1, &[(0, &[f(1.0)])], &[2]));
    }

    #[test]
    #[should_panic(expected = "0 bytes of group indices for 1 rows")]
    fn aggregate_missing_group_indices_panic() {
        geomean_run(&update_input(&[None, None], 1, &[(0, &[f(1.0)])], &[]));
    }

    #[test]
    #[should_panic(expected = "SQL aggregate geomean(f64) -> f64: unknown operation 7")]
    fn aggregate_unknown_operation_panics() {
        geomean_run(&agg_input(7, &[None], &[]));
    }

    #[test]
    #[should_panic(expected = "a state past the input")]
    fn aggregate_short_state_panics() {
        let mut input = agg_input(2, &[Some(state(&GeoMean { n: 1, logs: 0.0 }))], &[]);
        input.truncate(input.len() - 1);
        geomean_run(&input);
    }
}

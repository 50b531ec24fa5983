#include "options.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "commands.hpp"
#include "governance.hpp"
#include "report.hpp"
#include "trace.hpp"

namespace flock::cli {
namespace {

struct OptSpec {
  std::string_view long_name;
  char short_name;  // 0 when there is none
  bool takes_arg;
};

struct CommandSpec {
  std::string_view name;
  std::size_t min_args;
  std::size_t max_args;
  std::vector<OptSpec> options;
  std::string_view usage;        // after the program name
  std::string_view details;      // the rest of the command's help
  std::string_view synopsis;     // the top-level help's line: what to type...
  std::string_view summary;      // ...and what it does
  std::string_view missing_arg;  // what a call without its argument lacks, e.g. "a model NAME"
  int (*handler)(const Invocation&);
};

int register_any(const Invocation& inv) {
  return wants_training_capture(inv) ? cmd_register_with_training(inv) : cmd_register(inv);
}

constexpr std::array<OptSpec, 4> kConnOptions{{
    {"dbname", 'd', true},
    {"host", 'h', true},
    {"port", 'p', true},
    {"username", 'U', true},
}};

constexpr std::string_view kConnHelp =
    R"~(Connection options (unset ones come from the PG* environment variables, service files
and ~/.pgpass, as for psql):
  -d, --dbname=DBNAME      database name, or a connection string ("host=db dbname=ml",
                           "postgresql://user@db/ml") whose settings are all used
  -h, --host=HOST          database server host or socket directory
  -p, --port=PORT          database server port
  -U, --username=USER      database user name
)~";

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> specs{
      {"register", 1, 1,
       {{"name", 0, true}, {"format", 0, true}, {"description", 0, true}, {"features", 0, true},
        // training capture (cli/governance.cpp)
        {"dataset", 0, true}, {"training-code", 0, true}, {"code-ref", 0, true}, {"params", 0, true},
        {"metrics", 0, true}, {"environment", 0, true}},
       "register FILE --name NAME [OPTIONS]",
       R"~(Stores the model in FILE ("-" reads standard input) as the next version of model NAME
and prints its reference, e.g. "registered churn@3 (onnx, sha256 1a2b3c4d…)".

Options:
      --name=NAME          model name (required)
      --format=FORMAT      auto (the default: detect from the contents), onnx, or xgboost
                           (an XGBoost model saved as JSON)
      --description=TEXT   free-text description
      --features=A,B,C     names of the model's input features, in input order

Training capture (with any of these the model and its training run are recorded in one
transaction, as flock.log_training does; the model is not registered if that fails):
      --dataset=REFS       data set versions it was trained on, e.g. churn_train@3
                           (several separated by commas)
      --training-code=FILE the training script, stored with its SHA-256
      --code-ref=REF       where the code lives (a git URL, a commit); default: FILE's path
      --params=FILE        training parameters, a JSON object
      --metrics=FILE       evaluation metrics, a JSON object
      --environment=FILE   the training environment (library versions...), a JSON object
)~",
       "register FILE --name NAME",
       "store a model file (ONNX or XGBoost JSON) as a new version",
       "a model FILE", register_any},
      {"models", 0, 1, {},
       "models [NAME] [OPTIONS]",
       R"~(Lists the registered models, every version of each (or only model NAME): name,
version, format, the first 12 hex digits of the SHA-256, who registered it and when, and
the description.
)~",
       "models [NAME]",
       "list registered models and their versions",
       "a model NAME", cmd_models},
      {"info", 1, 1, {},
       "info REF [OPTIONS]",
       R"~(Prints the details of a model as JSON: its signature (inputs and outputs), format,
checksum, description and so on. REF is NAME for the latest version, NAME@VERSION, or
NAME@ALIAS for the version an alias points to (see flock.set_alias).
)~",
       "info REF",
       "show a model's details as JSON (REF: NAME, NAME@VERSION or NAME@ALIAS)",
       "a model REF (NAME or NAME@VERSION)", cmd_info},
      {"drop", 1, 1, {{"version", 0, true}},
       "drop NAME[@VERSION] [--version N] [OPTIONS]",
       R"~(Deletes model NAME: every version of it, or only version N. NAME@N is the same as
NAME --version N.

Options:
      --version=N          drop only this version
)~",
       "drop NAME[@VERSION]",
       "delete a model, or one version of it",
       "a model NAME", cmd_drop},
      {"lineage", 1, 1, {{"dot", 0, false}, {"openlineage", 0, false}, {"direction", 0, true}},
       "lineage REF [--dot | --openlineage] [--direction D] [OPTIONS]",
       R"~(Shows where a model version came from and what came of it: the tables a data set
snapshot read, data set versions, training runs, model versions, aliases and logged
inference batches. REF is a model reference (NAME, NAME@VERSION, NAME@ALIAS) or
dataset:NAME@VERSION for a data set.

Options:
      --direction=D        upstream, downstream or both (the default)
      --dot                print the graph in Graphviz dot (flockctl lineage m --dot | dot -Tsvg)
      --openlineage        print OpenLineage run events (JSON) for the graph
)~",
       "lineage REF",
       "show a model's or data set's lineage (text, --dot, --openlineage)",
       "a REF (NAME, NAME@VERSION, NAME@ALIAS or dataset:NAME@N)", cmd_lineage},
      {"trace", 1, 1, {{"row", 0, true}, {"max-values", 0, true}, {"json", 0, false}},
       "trace REF --row 'SQL' [--max-values N] [--json] [OPTIONS]",
       R"~(Scores the one row the query SQL returns with model REF and shows everything the
prediction went through (flock.trace): the input values as the model saw them (NULL =
missing), each graph node's outputs, each tree's path (node, feature, comparison,
branch taken, missing-value default) and leaf, the aggregation and the prediction.
The row binds to the model as in flock.predict: by column name, or by position for a
model without feature names.

Options:
      --row=SQL            a query returning exactly one row, e.g.
                           "SELECT * FROM customers WHERE id = 42"
      --max-values=N       list at most N intermediate values (default 10000)
      --json               print the trace document (jsonb) instead
)~",
       "trace REF --row SQL",
       "show what one prediction went through (inputs, nodes, tree paths)",
       "a model REF (NAME or NAME@VERSION)", cmd_trace},
      {"report", 1, 1,
       {{"html", 0, true}, {"data", 0, true}, {"rows", 0, true}, {"baseline", 0, true}, {"current", 0, true},
        {"sensitive", 0, true}, {"label", 0, true}, {"positive", 0, true}},
       "report REF --html FILE [OPTIONS]",
       R"~(Writes one self-contained HTML page about model version REF: its signature, lineage
graph, training run and metrics, and, when the database has the functions, global
importance (flock.feature_importance), a SHAP summary (flock.explain_rows), drift
(flock.drift) and fairness (flock.fairness); a section whose function is missing says
"not available". Charts are Vega-Lite, drawn in the page by the inlined Vega and
vega-embed (make charts installs them), so the page needs no network.

Options:
      --html=FILE          where to write the page (required)
      --data=SQL           rows for importance, the SHAP summary and fairness
      --rows=N             rows of --data the SHAP summary explains (default 200)
      --baseline=REF       drift: the reference data (a data set reference or a query)
      --current=REF        drift: the data compared with it
      --sensitive=COLUMN   fairness: the column whose groups are compared
      --label=COLUMN       fairness: the true label's column
      --positive=VALUE     fairness: the positive class
)~",
       "report REF --html FILE",
       "write a model version's report: signature, lineage, training, charts",
       "a model REF (NAME or NAME@VERSION)", cmd_report},
  };
  return specs;
}

const CommandSpec* find_command(std::string_view name) {
  for (const auto& c : commands())
    if (c.name == name) return &c;
  return nullptr;
}

// Looks up an option by long name (or short name when `long_name` is empty) as it may appear
// at this point of the command line: before the command any command's options are accepted
// (validate() checks them later), after it only that command's.
const OptSpec* find_option(std::string_view long_name, char short_name, const std::string& command,
                           bool& is_conn) {
  auto match = [&](const OptSpec& o) {
    return long_name.empty() ? (o.short_name != 0 && o.short_name == short_name)
                             : o.long_name == long_name;
  };
  is_conn = true;
  for (const auto& o : kConnOptions)
    if (match(o)) return &o;
  is_conn = false;
  if (!command.empty()) {
    for (const auto& o : find_command(command)->options)
      if (match(o)) return &o;
    return nullptr;
  }
  for (const auto& c : commands())
    for (const auto& o : c.options)
      if (match(o) && o.long_name != "version") return &o;
  return nullptr;
}

}  // namespace

bool is_command(std::string_view name) { return find_command(name) != nullptr; }

int run_command(const Invocation& inv) {
  validate(inv);
  return find_command(inv.command)->handler(inv);
}

void parse_command_line(const std::vector<std::string>& argv, Invocation& inv) {
  bool only_positional = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (only_positional || a == "-" || a.empty() || a[0] != '-') {
      if (inv.command.empty()) {
        if (a == "help" && !inv.help) {
          inv.help = true;  // `flockctl help [COMMAND]`
          continue;
        }
        if (!is_command(a)) throw UsageError(fmt::format("unknown command '{}'", a));
        inv.command = a;
      } else {
        inv.args.push_back(a);
      }
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }

    std::string shown;  // the option as the user wrote it, for messages
    std::optional<std::string> value;
    const OptSpec* spec = nullptr;
    bool is_conn = false;
    if (a.starts_with("--")) {
      std::string name = a.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      shown = "--" + name;
      if (name == "help" || (name == "version" && inv.command.empty())) {
        if (value) throw UsageError(fmt::format("option '{}' does not take a value", shown), inv.command);
        (name == "help" ? inv.help : inv.version) = true;
        continue;
      }
      spec = find_option(name, 0, inv.command, is_conn);
    } else {
      shown = a.substr(0, 2);
      if (a.size() > 2) value = a.substr(2);  // -dmydb
      spec = find_option({}, a[1], inv.command, is_conn);
    }
    if (!spec) {
      std::string where = inv.command.empty() ? "" : fmt::format(" for '{}'", inv.command);
      throw UsageError(fmt::format("unknown option '{}'{}", shown, where), inv.command);
    }
    if (!spec->takes_arg) {
      if (value) throw UsageError(fmt::format("option '{}' does not take a value", shown), inv.command);
      value = "";
    }
    if (!value) {
      if (i + 1 >= argv.size()) {
        std::string msg = fmt::format("option '{}' needs a value", shown);
        if (shown == "-h") msg += " (-h is --host; use --help for help)";
        throw UsageError(msg, inv.command);
      }
      value = argv[++i];
    }
    if (is_conn) {
      std::optional<std::string>* slot = spec->long_name == "dbname" ? &inv.conn.dbname
                                         : spec->long_name == "host" ? &inv.conn.host
                                         : spec->long_name == "port" ? &inv.conn.port
                                                                     : &inv.conn.username;
      *slot = *value;
    } else {
      inv.options[std::string(spec->long_name)] = *value;
    }
  }
}

void validate(const Invocation& inv) {
  const CommandSpec* spec = find_command(inv.command);
  if (!spec) throw UsageError("no command given");
  for (const auto& kv : inv.options) {
    const std::string& name = kv.first;
    bool ok = std::any_of(spec->options.begin(), spec->options.end(),
                          [&](const OptSpec& o) { return o.long_name == name; });
    if (!ok) throw UsageError(fmt::format("option '--{}' is not valid for '{}'", name, inv.command), inv.command);
  }
  if (inv.args.size() < spec->min_args) {
    throw UsageError(fmt::format("'{}' needs {}", inv.command, spec->missing_arg), inv.command);
  }
  if (inv.args.size() > spec->max_args)
    throw UsageError(fmt::format("unexpected argument '{}'", inv.args[spec->max_args]), inv.command);
}

std::string usage_line(std::string_view command) {
  if (const CommandSpec* spec = find_command(command))
    return fmt::format("Usage: {} {}", kProgram, spec->usage);
  return fmt::format("Usage: {} [OPTIONS] COMMAND [ARGUMENTS]", kProgram);
}

std::string help_text(std::string_view command) {
  if (const CommandSpec* spec = find_command(command))
    return fmt::format("{}\n\n{}\n{}\nExit status: 0 on success, 1 if the operation or the connection failed,\n"
                       "2 for a usage error.\n",
                       usage_line(command), spec->details, kConnHelp);
  std::string out = fmt::format(
      "{} manages machine-learning models stored in PostgreSQL by the flock extension.\n\n{}\n\n"
      "Commands:\n",
      kProgram, usage_line({}));
  for (const auto& c : commands()) out += fmt::format("  {:<27} {}\n", c.synopsis, c.summary);
  out += fmt::format(
      "\n{1}\nOther options:\n"
      "      --help               show this help, or a command's: {0} COMMAND --help\n"
      "      --version            show the version of {0}\n\n"
      "Exit status: 0 on success, 1 if the operation or the connection failed,\n"
      "2 for a usage error.\n",
      kProgram, kConnHelp);
  return out;
}

}  // namespace flock::cli

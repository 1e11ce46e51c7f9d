// `include:`, `env_file:`, the snapshot of the files a config was read from (ConfigFiles), and
// the per-program keys checked across programs: depends_on, max_age(_jitter), hooks.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/limits.hpp"

using namespace std::chrono_literals;
using clusterd::Config;
using clusterd::ConfigError;
using clusterd::ConfigFiles;
using clusterd::Diagnostic;

namespace {

namespace fs = std::filesystem;

/// A temporary directory, removed with what it holds.
class TempDir {
  public:
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "clusterd-include-XXXXXX").string();
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    /// Writes `text` to `name` (folders made as needed); returns the file's path.
    std::string write(const std::string& name, const std::string& text) const {
        fs::path p = path_ / name;
        fs::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary) << text;
        return p.string();
    }
    std::string path(const std::string& name = "") const {
        return name.empty() ? path_.string() : (path_ / name).string();
    }

  private:
    fs::path path_;
};

std::string program(const std::string& name, const std::string& extra = "") {
    return "  " + name + ":\n    cores: 1\n" + extra;
}

std::vector<Diagnostic> errors_of(const std::string& main) {
    try {
        clusterd::load_config_file(main);
    } catch (const ConfigError& e) {
        return e.diagnostics();
    }
    FAIL(main << " loaded without an error");
    return {};
}

std::vector<Diagnostic> errors_of_text(const std::string& text) {
    try {
        clusterd::load_config_string(text, "/etc/clusterd/test.yaml", nullptr);
    } catch (const ConfigError& e) {
        return e.diagnostics();
    }
    FAIL("loaded without an error:\n" << text);
    return {};
}

/// Exactly one diagnostic, starting with `prefix` ("file:line:col: ") and containing `fragment`.
void expect_one(const std::vector<Diagnostic>& errors, const std::string& prefix,
                const std::string& fragment) {
    REQUIRE(errors.size() == 1);
    CAPTURE(errors[0].to_string());
    CHECK(errors[0].to_string().starts_with(prefix));
    CHECK(errors[0].message.find(fragment) != std::string::npos);
}

std::vector<std::string> names(const Config& c) {
    std::vector<std::string> out;
    for (const auto& p : c.programs) out.push_back(p.name);
    return out;
}

}  // namespace

TEST_CASE("include: the files a pattern matches are read in sorted order, after the main file") {
    TempDir dir;
    dir.write("conf.d/20-b.yaml", "programs:\n" + program("b"));
    dir.write("conf.d/10-a.yaml", "programs:\n" + program("a1") + program("a2"));
    dir.write("conf.d/notes.txt", "not yaml: [");
    dir.write("extra/z.yaml", "programs:\n" + program("z"));
    std::string main = dir.write("clusterd.yaml", "include: [conf.d/*.yaml, " + dir.path() +
                                                      "/extra/*.yaml, nothing/*.yaml]\n"
                                                      "programs:\n" +
                                                      program("main"));
    Config c = clusterd::load_config_file(main);
    CHECK(names(c) == std::vector<std::string>{"main", "a1", "a2", "b", "z"});
    CHECK(c.include == std::vector<std::string>{dir.path("conf.d/*.yaml"), dir.path("extra/*.yaml"),
                                                dir.path("nothing/*.yaml")});
    CHECK(c.programs[0].source_file == main);
    CHECK(c.programs[1].source_file == dir.path("conf.d/10-a.yaml"));
    CHECK(c.programs[3].source_file == dir.path("conf.d/20-b.yaml"));
    // Each program carries the main text and every other file read.
    REQUIRE(c.files != nullptr);
    CHECK(c.files->size() == 3);
    CHECK(c.files->count(dir.path("conf.d/10-a.yaml")) == 1);
    for (const auto& p : c.programs) {
        CHECK(p.source_text == c.text);
        CHECK(p.source_files == c.files);
    }
    // Positions of included programs point into their file.
    const clusterd::Position& at = c.positions.at("programs.b.cores");
    CHECK(at.file == dir.path("conf.d/20-b.yaml"));
    CHECK(at.line == 3);
    CHECK(c.positions.at("programs.main").file.empty());
    Diagnostic d = c.diagnostic("programs.b.user", "unknown user");
    CHECK(d.to_string() == dir.path("conf.d/20-b.yaml") + ":3:5: programs.b.user: unknown user");
    CHECK(c.diagnostic("programs.main.user", "x").file == main);
}

TEST_CASE("include: a string pattern, the main file not matched by its own pattern") {
    TempDir dir;
    dir.write("other.yaml", "programs:\n" + program("other"));
    std::string main = dir.write("main.yaml", "include: \"*.yaml\"\nprograms:\n" + program("m"));
    Config c = clusterd::load_config_file(main);
    CHECK(names(c) == std::vector<std::string>{"m", "other"});
}

TEST_CASE("include: programs may come from included files only; none at all is an error") {
    TempDir dir;
    dir.write("conf.d/a.yaml", "# only a comment\n");
    dir.write("conf.d/b.yaml", "programs: {}\n");
    std::string main = dir.write("main.yaml", "include: conf.d/*.yaml\n");
    expect_one(errors_of(main), main + ":1:1: ", "missing required key \"programs\"");
    std::string empty = dir.write("empty.yaml", "include: conf.d/*.yaml\nprograms: {}\n");
    expect_one(errors_of(empty), empty + ":2:11: ", "programs: expected at least one program");

    dir.write("conf.d/c.yaml", "programs:\n" + program("c"));
    CHECK(names(clusterd::load_config_file(main)) == std::vector<std::string>{"c"});
    CHECK(names(clusterd::load_config_file(empty)) == std::vector<std::string>{"c"});
}

TEST_CASE("include: a pattern that matches nothing adds nothing") {
    TempDir dir;
    std::string main = dir.write(
        "main.yaml", "include: [/nonexistent-clusterd/*.yaml]\nprograms:\n" + program("m"));
    Config c = clusterd::load_config_file(main);
    CHECK(names(c) == std::vector<std::string>{"m"});
    CHECK(c.files->empty());
}

TEST_CASE("include: an error in an included file names that file, line and column") {
    TempDir dir;
    std::string bad = dir.write("conf.d/bad.yaml", "programs:\n  api:\n    corse: 2\n");
    std::string main = dir.write(
        "main.yaml", "include: conf.d/*.yaml\nprograms:\n" + program("web", "    user: [x]\n"));
    auto errors = errors_of(main);
    REQUIRE(errors.size() == 2);
    // The main file's first, then the included file's.
    CHECK(errors[0].to_string().starts_with(main + ":5:11: programs.web.user: expected"));
    CHECK(errors[1].to_string().starts_with(bad + ":3:5: programs.api: unknown key \"corse\""));

    dir.write("main.yaml", "include: conf.d/*.yaml\nprograms:\n" + program("web"));
    dir.write("conf.d/bad.yaml", "programs:\n  api: [\n");
    expect_one(errors_of(main), bad + ":", "invalid YAML");
}

TEST_CASE("include: the main file's checks apply to included files") {
    TempDir dir;
    std::string main = dir.write("main.yaml", "include: conf.d/*\nprograms:\n" + program("m"));
    std::string two = dir.write("conf.d/two.yaml", "programs:\n" + program("a") + "---\n{}\n");
    expect_one(errors_of(main), two + ":4:1: ", "expected one YAML document, found another");
    fs::remove(two);
    std::string utf = dir.write("conf.d/latin1.yaml", "programs:\n  a:\n    user: Jos\xe9\n");
    expect_one(errors_of(main), utf + ":3:14: ", "invalid UTF-8");
    fs::remove(utf);
    fs::create_directories(dir.path("conf.d/sub"));
    expect_one(errors_of(main), dir.path("conf.d/sub") + ": ", "is a directory");
}

TEST_CASE("include: daemon or include in an included file is refused") {
    TempDir dir;
    std::string inc =
        dir.write("conf.d/x.yaml",
                  "daemon:\n  log_level: debug\ninclude: more/*.yaml\nprograms:\n" + program("x"));
    std::string main = dir.write("main.yaml", "include: conf.d/*.yaml\nprograms:\n" + program("m"));
    auto errors = errors_of(main);
    REQUIRE(errors.size() == 2);
    CHECK(errors[0].to_string().starts_with(inc + ":2:3: daemon: only the main config"));
    CHECK(errors[1].to_string().starts_with(inc + ":3:10: include: only the main config"));
    CHECK(errors[1].message.find("an included file has only \"programs\"") != std::string::npos);
}

TEST_CASE("include: one program name in two files names both places") {
    TempDir dir;
    std::string inc = dir.write("conf.d/x.yaml", "programs:\n" + program("a") + program("web"));
    std::string main =
        dir.write("main.yaml", "include: conf.d/*.yaml\nprograms:\n" + program("web"));
    expect_one(errors_of(main),
               inc + ":4:3: programs: ", "duplicate program \"web\" (first at " + main + ":3:3)");
}

TEST_CASE("include: listen addresses may not overlap across files") {
    TempDir dir;
    std::string inc = dir.write(
        "conf.d/x.yaml",
        "programs:\n  api:\n    cores: 1\n    listen: [{name: h, address: \"127.0.0.1:8080\"}]\n");
    std::string main = dir.write("main.yaml",
                                 "include: conf.d/*.yaml\nprograms:\n  web:\n    cores: 1\n"
                                 "    listen: [{name: h, address: \"0.0.0.0:8080\"}]\n");
    expect_one(errors_of(main), inc + ":4:33: programs.api.listen[0].address: ",
               "overlaps 0.0.0.0:8080 of programs.web.listen[0] at " + main + ":5:33");
}

TEST_CASE("include: more than kMaxIncludedFiles files") {
    TempDir dir;
    for (std::size_t i = 0; i <= clusterd::limits::kMaxIncludedFiles; ++i)
        dir.write("conf.d/" + std::to_string(1000 + i) + ".yaml", "programs: {}\n");
    std::string main =
        dir.write("main.yaml", "include: [conf.d/*.yaml]\nprograms:\n" + program("m"));
    expect_one(errors_of(main), main + ":1:11: include[0]: ", "more than 256 included files");
}

TEST_CASE("include: not a string or a sequence of strings") {
    expect_one(errors_of_text("include: {a: b}\nprograms:\n" + program("m")),
               "/etc/clusterd/test.yaml:1:10: include: ", "expected a glob pattern");
    expect_one(errors_of_text("include: [\"\"]\nprograms:\n" + program("m")),
               "/etc/clusterd/test.yaml:1:11: include[0]: ", "expected a glob pattern");
}

TEST_CASE("env_file: files in order, later ones win, env: wins over all") {
    TempDir dir;
    dir.write("base.env", "A=base\nB=base\nC=base\n");
    dir.write("site.env", "# site overrides\nB=site\nD=\"from site\"\n");
    std::string main =
        dir.write("main.yaml", "programs:\n" + program("web", "    env_file: [base.env, " +
                                                                  dir.path("site.env") +
                                                                  "]\n    env: {C: yaml}\n"));
    Config c = clusterd::load_config_file(main);
    const auto& web = c.programs[0];
    CHECK(web.env == std::map<std::string, std::string>{
                         {"A", "base"}, {"B", "site"}, {"C", "yaml"}, {"D", "from site"}});
    REQUIRE(web.env_files.size() == 2);
    CHECK(web.env_files[0] == clusterd::EnvFileRef{dir.path("base.env"), false});
    CHECK(web.env_files[1] == clusterd::EnvFileRef{dir.path("site.env"), false});
    CHECK(c.files->at(dir.path("base.env")) == "A=base\nB=base\nC=base\n");
}

TEST_CASE("env_file: a relative path is resolved against the included file's folder") {
    TempDir dir;
    dir.write("conf.d/app.env", "FROM=conf.d\n");
    dir.write("app.env", "FROM=top\n");
    dir.write("conf.d/app.yaml", "programs:\n" + program("app", "    env_file: app.env\n"));
    std::string main = dir.write("main.yaml", "include: conf.d/*.yaml\nprograms:\n" +
                                                  program("top", "    env_file: app.env\n"));
    Config c = clusterd::load_config_file(main);
    CHECK(c.programs[0].env.at("FROM") == "top");
    CHECK(c.programs[1].env.at("FROM") == "conf.d");
    CHECK(c.programs[1].env_files[0].path == dir.path("conf.d/app.env"));
}

TEST_CASE("env_file: a leading '-' makes a missing file fine; a missing one is an error") {
    TempDir dir;
    std::string main = dir.write(
        "main.yaml", "programs:\n" + program("web", "    env_file: [-missing.env, -" +
                                                        dir.path("also-missing.env") + "]\n"));
    Config c = clusterd::load_config_file(main);
    CHECK(c.programs[0].env.empty());
    CHECK(c.programs[0].env_files[0] == clusterd::EnvFileRef{dir.path("missing.env"), true});
    CHECK(c.files->empty());

    std::string strict =
        dir.write("strict.yaml", "programs:\n" + program("web", "    env_file: missing.env\n"));
    expect_one(
        errors_of(strict), dir.path("missing.env") + ": ",
        "cannot read: No such file or directory (programs.web.env_file at " + strict + ":4:15)");
    // Present but not readable as a file: an error even with '-'.
    fs::create_directories(dir.path("dir.env"));
    std::string directory =
        dir.write("directory.yaml", "programs:\n" + program("web", "    env_file: -dir.env\n"));
    expect_one(errors_of(directory), dir.path("dir.env") + ": ", "is a directory");
}

TEST_CASE("env_file: errors in the file name it and its line; every file's are reported") {
    TempDir dir;
    std::string a = dir.write("a.env", "OK=1\nbroken line\n");
    std::string b = dir.write("b.env", "CLUSTERD_X=1\n");
    std::string main =
        dir.write("main.yaml", "programs:\n" + program("web",
                                                       "    env_file: [a.env, b.env]\n"
                                                       "    cores: 0\n"));
    auto errors = errors_of(main);
    REQUIRE(errors.size() == 3);
    // The config file's first, then the env files in the order read.
    CHECK(errors[0].to_string().starts_with(main + ":"));
    CHECK(errors[1].to_string().starts_with(a + ":2:1: expected NAME=VALUE"));
    CHECK(errors[2].to_string().starts_with(b + ":1:1: CLUSTERD_X is reserved"));
}

TEST_CASE("env_file: a file named by two programs is read and reported once") {
    TempDir dir;
    std::string a = dir.write("a.env", "1X=1\n");
    std::string main =
        dir.write("main.yaml", "programs:\n" + program("one", "    env_file: a.env\n") +
                                   program("two", "    env_file: a.env\n"));
    expect_one(errors_of(main), a + ":1:1: ", "is not a valid environment variable name");
}

TEST_CASE("env_file: not a path") {
    expect_one(errors_of_text("programs:\n" + program("web", "    env_file: {a: b}\n")),
               "/etc/clusterd/test.yaml:4:15: programs.web.env_file: ", "expected a file path");
    expect_one(errors_of_text("programs:\n" + program("web", "    env_file: [\"-\"]\n")),
               "/etc/clusterd/test.yaml:4:16: programs.web.env_file[0]: ", "expected a file path");
}

TEST_CASE("snapshot: loading the text with the files read gives the same config") {
    TempDir dir;
    dir.write("conf.d/10-api.yaml",
              "programs:\n" + program("api",
                                      "    env_file: [../common.env, -opt.env]\n"
                                      "    depends_on: web\n"));
    dir.write("conf.d/20-jobs.yaml", "programs:\n" + program("jobs"));
    dir.write("common.env", "SHARED=1\nNAME=\"common file\"\n");
    std::string main = dir.write(
        "main.yaml", "include: conf.d/*.yaml\nprograms:\n" + program("web",
                                                                     "    env_file: common.env\n"
                                                                     "    env: {NAME: web}\n"));
    Config disk = clusterd::load_config_file(main);
    REQUIRE(disk.files->size() == 3);

    // The disk changes; the snapshot does not.
    fs::remove_all(dir.path("conf.d"));
    dir.write("common.env", "SHARED=changed\n");
    dir.write("opt.env", "NEW=1\n");
    dir.write("conf.d/00-new.yaml", "programs:\n" + program("new"));

    Config again = clusterd::load_config_string(*disk.text, disk.source, disk.files.get());
    CHECK(names(again) == names(disk));
    CHECK(*again.files == *disk.files);
    CHECK(again.include == disk.include);
    CHECK(again.positions.size() == disk.positions.size());
    for (std::size_t i = 0; i < disk.programs.size(); ++i) {
        CAPTURE(disk.programs[i].name);
        CHECK(again.programs[i].env == disk.programs[i].env);
        CHECK(again.programs[i].env_files == disk.programs[i].env_files);
        CHECK(again.programs[i].depends_on == disk.programs[i].depends_on);
        CHECK(again.programs[i].source_file == disk.programs[i].source_file);
        CHECK(*again.programs[i].source_files == *disk.programs[i].source_files);
    }
    CHECK(again.programs[1].env.at("SHARED") == "1");
    CHECK(again.programs[1].env.count("NEW") == 0);

    // Read from the disk now, it is another config.
    Config now = clusterd::load_config_file(main);
    CHECK(names(now) == std::vector<std::string>{"web", "new"});
    CHECK(now.programs[0].env.at("SHARED") == "changed");
}

TEST_CASE("snapshot: a non-optional env file missing from it cannot be read") {
    ConfigFiles files;  // nothing
    std::string text = "programs:\n" + program("web", "    env_file: [-/x/opt.env, /x/app.env]\n");
    try {
        clusterd::load_config_string(text, "/etc/clusterd/main.yaml", &files);
        FAIL("loaded");
    } catch (const ConfigError& e) {
        REQUIRE(e.diagnostics().size() == 1);
        CHECK(e.diagnostics()[0].to_string().starts_with(
            "/x/app.env: cannot read: No such file or directory"));
    }
    files["/x/app.env"] = "A=1\n";
    files["/etc/clusterd/conf.d/a.yaml"] = "programs:\n" + program("a");
    files["/etc/clusterd/conf.d/.hidden.yaml"] = "programs:\n" + program("hidden");
    files["/etc/clusterd/conf.d/sub/b.yaml"] = "programs:\n" + program("b");
    Config c = clusterd::load_config_string("include: conf.d/*.yaml\n" + text,
                                            "/etc/clusterd/main.yaml", &files);
    // fnmatch as glob matches: '*' spans no '/' and no leading '.'.
    CHECK(names(c) == std::vector<std::string>{"web", "a"});
    CHECK(c.programs[0].env.at("A") == "1");
}

TEST_CASE("depends_on: names, a lone string, unknown names, duplicates") {
    Config c = clusterd::load_config_string(
        "programs:\n" + program("api", "    depends_on: [db, cache]\n") + program("db") +
            program("cache", "    depends_on: db\n"),
        "/etc/clusterd/test.yaml");
    CHECK(c.programs[0].depends_on == std::vector<std::string>{"db", "cache"});
    CHECK(c.programs[2].depends_on == std::vector<std::string>{"db"});

    expect_one(
        errors_of_text("programs:\n" + program("api", "    depends_on: [dbx]\n") + program("db")),
        "/etc/clusterd/test.yaml:4:18: programs.api.depends_on[0]: ",
        "no program \"dbx\" (programs: api, db)");
    expect_one(errors_of_text("programs:\n" + program("api", "    depends_on: [db, db]\n") +
                              program("db")),
               "/etc/clusterd/test.yaml:4:22: programs.api.depends_on[1]: ",
               "duplicate \"db\" (first at programs.api.depends_on[0])");
    expect_one(errors_of_text("programs:\n" + program("api", "    depends_on: {db: 1}\n")),
               "/etc/clusterd/test.yaml:4:17: programs.api.depends_on: ",
               "expected a program name or a sequence of program names");
}

TEST_CASE("depends_on: itself and cycles are errors naming the cycle") {
    expect_one(errors_of_text("programs:\n" + program("api", "    depends_on: [api]\n")),
               "/etc/clusterd/test.yaml:4:18: programs.api.depends_on[0]: ",
               "dependency cycle api -> api");
    expect_one(errors_of_text("programs:\n" + program("api", "    depends_on: [db]\n") +
                              program("db", "    depends_on: [api]\n")),
               "/etc/clusterd/test.yaml:7:18: programs.db.depends_on[0]: ",
               "dependency cycle api -> db -> api");
    expect_one(errors_of_text("programs:\n" + program("a", "    depends_on: [x]\n") +
                              program("b", "    depends_on: [c]\n") +
                              program("c", "    depends_on: [d]\n") +
                              program("d", "    depends_on: [b]\n") + program("x")),
               "/etc/clusterd/test.yaml:13:18: programs.d.depends_on[0]: ",
               "dependency cycle b -> c -> d -> b");
}

TEST_CASE("depends_on: across included files, errors point into the right file") {
    TempDir dir;
    std::string inc =
        dir.write("conf.d/x.yaml", "programs:\n" + program("db", "    depends_on: [web]\n"));
    std::string main = dir.write("main.yaml", "include: conf.d/*.yaml\nprograms:\n" +
                                                  program("web", "    depends_on: [db]\n"));
    expect_one(errors_of(main),
               inc + ":4:18: programs.db.depends_on[0]: ", "dependency cycle web -> db -> web");
}

TEST_CASE("max_age and max_age_jitter") {
    Config c = clusterd::load_config_string(
        "programs:\n" + program("web", "    max_age: 6h\n    max_age_jitter: 30m\n") +
            program("api"),
        "/etc/clusterd/test.yaml");
    CHECK(c.programs[0].max_age == 6h);
    CHECK(c.programs[0].max_age_jitter == 30min);
    CHECK(c.programs[1].max_age == 0ms);
    CHECK(c.programs[1].max_age_jitter == 0ms);

    expect_one(
        errors_of_text("programs:\n" + program("web", "    max_age: 1h\n    max_age_jitter: 1h\n")),
        "/etc/clusterd/test.yaml:5:21: programs.web.max_age_jitter: ",
        "must be less than max_age (1h), got 1h");
    expect_one(errors_of_text("programs:\n" + program("web", "    max_age: old\n")),
               "/etc/clusterd/test.yaml:4:14: programs.web.max_age: ", "expected a duration");
}

TEST_CASE("hooks: on, command, timeout") {
    Config c = clusterd::load_config_string(
        "programs:\n" +
            program("web",
                    "    hooks:\n"
                    "      - {on: exited, command: [/usr/local/bin/page, --team, ops]}\n"
                    "      - on: [hung, recycled]\n"
                    "        command: [notify]\n"
                    "        timeout: 30s\n"),
        "/etc/clusterd/test.yaml");
    const auto& hooks = c.programs[0].hooks;
    REQUIRE(hooks.size() == 2);
    CHECK(hooks[0].on == std::vector<std::string>{"exited"});
    CHECK(hooks[0].command == std::vector<std::string>{"/usr/local/bin/page", "--team", "ops"});
    CHECK(hooks[0].timeout == 10s);
    CHECK(hooks[1].on == std::vector<std::string>{"hung", "recycled"});
    CHECK(hooks[1].timeout == 30s);
    CHECK(c.positions.at("programs.web.hooks[0].command[0]").line == 5);
}

TEST_CASE("hooks: each mistake at its position") {
    auto hook = [](const std::string& entry) {
        return errors_of_text("programs:\n" +
                              program("web", "    hooks:\n      - " + entry + "\n"));
    };
    const std::string at = "/etc/clusterd/test.yaml:5:";
    expect_one(hook("{on: crashed, command: [/bin/true]}"), at + "14: programs.web.hooks[0].on: ",
               "expected an event name (started, restarted, ready, exited, backoff, recycled, "
               "hung, scaled, reload, upgrade), got \"crashed\"");
    expect_one(hook("{on: [ready, nope], command: [/bin/true]}"),
               at + "22: programs.web.hooks[0].on[1]: ", "expected an event name");
    expect_one(hook("{on: [], command: [/bin/true]}"),
               at + "14: programs.web.hooks[0].on: ", "expected at least one event name");
    expect_one(hook("{on: ready, command: \"/bin/notify --all\"}"),
               at + "30: programs.web.hooks[0].command: ",
               "expected a sequence of strings (argv), e.g. [\"/usr/local/bin/page\", \"--team\", "
               "\"ops\"], got \"/bin/notify --all\" (a hook runs its argv, no shell)");
    expect_one(hook("{on: ready, command: []}"), at + "30: programs.web.hooks[0].command: ",
               "expected a non-empty sequence of strings");
    expect_one(hook("{on: ready, command: [/bin/x, \"\"]}"),
               at + "39: programs.web.hooks[0].command[1]: ", "expected a non-empty argument");
    expect_one(hook("{on: ready, command: [/bin/x], timeout: 0s}"),
               at + "49: programs.web.hooks[0].timeout: ", "expected a duration greater than 0");
    expect_one(hook("{on: ready, command: [/bin/x], timeout: 2h}"),
               at + "49: programs.web.hooks[0].timeout: ", "expected a duration of at most 1h");
    expect_one(hook("{on: ready, command: [/bin/x], shell: yes}"),
               at + "40: programs.web.hooks[0]: ", "unknown key \"shell\"");
    expect_one(hook("{on: ready}"),
               at + "9: programs.web.hooks[0]: ", "missing required key \"command\"");
    expect_one(hook("/bin/true"), at + "9: programs.web.hooks[0]: ",
               "expected a map with \"on\" and \"command\" keys");

    std::string many;
    for (int i = 0; i < 17; ++i) many += "      - {on: ready, command: [/bin/true]}\n";
    expect_one(
        errors_of_text("programs:\n" + program("web", "    hooks:\n" + many)),
        "/etc/clusterd/test.yaml:5:7: programs.web.hooks: ", "expected at most 16 hooks, got 17");
}

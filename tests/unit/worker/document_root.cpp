#include "worker/document_root.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

using namespace clusterd::worker;
namespace fs = std::filesystem;

namespace {

// <tmp>/root holds the served tree; <tmp>/secret lies beside it, outside the root.
struct Tree {
    Tree() {
        std::string templ = (fs::temp_directory_path() / "clusterd-root-XXXXXX").string();
        REQUIRE(::mkdtemp(templ.data()) != nullptr);
        base = templ;
        root = base / "root";
        fs::create_directories(root / "sub");
        fs::create_directories(root / "empty");
        fs::create_directories(base / "secret");
        write(root / "index.html", "<h1>home</h1>");
        write(root / "sub" / "index.html", "sub");
        write(root / "a b.txt", "spaces");
        write(root / "style.css", "body{}");
        write(base / "secret" / "passwd", "root:x:0:0");
        fs::create_symlink("index.html", root / "inside-link.html");
        fs::create_symlink(base / "secret" / "passwd", root / "absolute-out");
        fs::create_symlink("../secret/passwd", root / "relative-out");
        fs::create_symlink("../secret", root / "dir-out");
        fs::create_symlink("/etc/passwd", root / "etc-passwd");
        REQUIRE(::mkfifo((root / "fifo").c_str(), 0600) == 0);
    }
    ~Tree() {
        std::error_code ec;
        fs::remove_all(base, ec);
    }
    static void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

    fs::path base, root;
};

std::string read_all(const RootFile& f) {
    std::string out(f.size, '\0');
    CHECK(::pread(f.fd.get(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
    return out;
}

}  // namespace

TEST_CASE("target_to_relative: decodes and normalises") {
    CHECK(target_to_relative("/").path.empty());
    CHECK(target_to_relative("/a/b.txt").path == "a/b.txt");
    CHECK(target_to_relative("/a/./b//c").path == "a/b/c");
    CHECK(target_to_relative("/a%20b.txt").path == "a b.txt");
    CHECK(target_to_relative("/a.txt?x=../../etc").path == "a.txt");
    CHECK(target_to_relative("/a.txt#frag").path == "a.txt");
    CHECK(target_to_relative("/%41%62").path == "Ab");
    CHECK(target_to_relative("/dir/").directory);
    CHECK_FALSE(target_to_relative("/dir").directory);
    CHECK(target_to_relative("/a..b").path == "a..b");  // only a whole ".." segment climbs
}

TEST_CASE("request_path: cuts query and fragment, reduces absolute-form") {
    CHECK(request_path("/a?b") == "/a");
    CHECK(request_path("/a#b") == "/a");
    CHECK(request_path("http://host:8080/a/b?c") == "/a/b");
    CHECK(request_path("HTTPS://host") == "/");
    CHECK(request_path("*") == "*");
    CHECK(target_to_relative("http://host/x/y").path == "x/y");
    CHECK(target_to_relative("http://host/../x").status == 403);
}

TEST_CASE("target_to_relative: refuses escapes with 403 and garbage with 400") {
    for (const char* escape :
         {"/..", "/../etc/passwd", "/a/../../etc", "/%2e%2e/etc", "/%2E%2E/etc", "/.%2e/etc",
          "/a/%2e%2e/%2e%2e", "/..%2fetc", "//etc/passwd", "/%2fetc/passwd", "/%2F"}) {
        CAPTURE(escape);
        CHECK(target_to_relative(escape).status == 403);
    }
    for (const char* bad : {"", "a/b", "*", "/%", "/%4", "/%zz", "/a%00b", "/%g0"}) {
        CAPTURE(bad);
        CHECK(target_to_relative(bad).status == 400);
    }
    // Decoding happens once: "%252e" is the literal name "%2e".
    CHECK(target_to_relative("/%252e%252e").path == "%2e%2e");
}

TEST_CASE("DocumentRoot: a missing or unusable root is an error") {
    CHECK_THROWS_AS(DocumentRoot("/nonexistent/clusterd"), std::system_error);
    Tree tree;
    CHECK_THROWS_AS(DocumentRoot((tree.root / "index.html").string()), std::system_error);
}

TEST_CASE("DocumentRoot: serves files, index.html for directories, and nothing outside") {
    Tree tree;
    for (auto mode : {DocumentRoot::Mode::openat2, DocumentRoot::Mode::realpath}) {
        CAPTURE(static_cast<int>(mode));
        DocumentRoot root(tree.root.string(), mode);
        CHECK(root.path() == fs::canonical(tree.root).string());

        auto home = root.open("/");
        REQUIRE(home.status == 200);
        CHECK(home.name == "index.html");
        CHECK(read_all(home) == "<h1>home</h1>");

        auto sub = root.open("/sub/");
        REQUIRE(sub.status == 200);
        CHECK(read_all(sub) == "sub");
        CHECK(root.open("/sub").status == 200);

        auto spaced = root.open("/a%20b.txt");
        REQUIRE(spaced.status == 200);
        CHECK(spaced.size == 6);
        CHECK(spaced.name == "a b.txt");

        auto css = root.open("/style.css?v=2");
        REQUIRE(css.status == 200);
        CHECK(css.name == "style.css");

        auto link = root.open("/inside-link.html");
        REQUIRE(link.status == 200);
        CHECK(read_all(link) == "<h1>home</h1>");

        CHECK(root.open("/missing.txt").status == 404);
        CHECK(root.open("/empty/").status == 404);       // no index.html
        CHECK(root.open("/index.html/").status == 404);  // a file is not a directory
        CHECK(root.open("/fifo").status == 404);         // and did not block
        CHECK(root.open("/../secret/passwd").status == 403);
        CHECK(root.open("/%2e%2e/secret/passwd").status == 403);
        CHECK(root.open("/sub/%2E%2E/%2e%2e/secret/passwd").status == 403);
        CHECK(root.open("/%2Fetc/passwd").status == 403);
        CHECK(root.open("/absolute-out").status == 403);
        CHECK(root.open("/relative-out").status == 403);
        CHECK(root.open("/dir-out/passwd").status == 403);
        CHECK(root.open("/etc-passwd").status == 403);
        CHECK(root.open("/%zz").status == 400);
    }
}

TEST_CASE("DocumentRoot: automatic mode prefers openat2 where the kernel has it") {
    Tree tree;
    DocumentRoot root(tree.root.string());
    CHECK(root.mode() != DocumentRoot::Mode::automatic);
}

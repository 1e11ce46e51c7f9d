// spdlog and fmt compiled into clusterd's binaries instead of loaded from their shared
// libraries (CLUSTERD_STATIC_LIBS, see the top CMakeLists.txt): one translation unit with
// their out-of-line definitions, as their compiled-library builds have them. spdlog's
// headers declare these functions (SPDLOG_COMPILED_LIB) and its -inl.h headers define them;
// fmt's format-inl.h defines its non-template functions, and the templates fmt.h declares
// `extern` for char are instantiated here once.
#ifndef SPDLOG_COMPILED_LIB
#error "built with SPDLOG_COMPILED_LIB (the clusterd_spdlog target sets it)"
#endif

#include <spdlog/async.h>
#include <spdlog/async_logger-inl.h>
#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/details/thread_pool-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/basic_file_sink-inl.h>
#include <spdlog/sinks/rotating_file_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_color_sinks-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

#include <mutex>

// The sink templates the compiled library instantiates (the headers declare them extern).
template class spdlog::sinks::base_sink<std::mutex>;
template class spdlog::sinks::base_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::basic_file_sink<std::mutex>;
template class spdlog::sinks::basic_file_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::rotating_file_sink<std::mutex>;
template class spdlog::sinks::rotating_file_sink<spdlog::details::null_mutex>;
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::ansicolor_stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stdout_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::ansicolor_stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::ansicolor_stderr_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink_base<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stdout_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stdout_sink<spdlog::details::console_nullmutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_mutex>;
template class spdlog::sinks::stderr_sink<spdlog::details::console_nullmutex>;

// The console logger factories, for the synchronous factory (the one clusterd uses).
namespace spdlog {
using sync = synchronous_factory;
template std::shared_ptr<logger> stdout_color_mt<sync>(const std::string&, color_mode);
template std::shared_ptr<logger> stdout_color_st<sync>(const std::string&, color_mode);
template std::shared_ptr<logger> stderr_color_mt<sync>(const std::string&, color_mode);
template std::shared_ptr<logger> stderr_color_st<sync>(const std::string&, color_mode);
template std::shared_ptr<logger> stdout_logger_mt<sync>(const std::string&);
template std::shared_ptr<logger> stdout_logger_st<sync>(const std::string&);
template std::shared_ptr<logger> stderr_logger_mt<sync>(const std::string&);
template std::shared_ptr<logger> stderr_logger_st<sync>(const std::string&);
}  // namespace spdlog

#include <fmt/format-inl.h>

FMT_BEGIN_NAMESPACE
namespace detail {
template FMT_API auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template FMT_API auto decimal_point_impl(locale_ref) -> char;
template FMT_API void buffer<char>::append(const char*, const char*);
template FMT_API void vformat_to(buffer<char>&, string_view,
                                 basic_format_args<FMT_BUFFER_CONTEXT(char)>, locale_ref);
}  // namespace detail
FMT_END_NAMESPACE

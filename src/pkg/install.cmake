# The version header, and (later) installation and packaging; included at
# the end of the top-level CMakeLists.txt once every target exists.
set(CNN_PKG ${PROJECT_SOURCE_DIR}/src/pkg)

# cnn/version.h in the build tree, for the programs and the headers.
configure_file(${CNN_PKG}/version.h.in ${PROJECT_BINARY_DIR}/generated/cnn/version.h @ONLY)
target_include_directories(cnn PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>)
target_sources(cnn PRIVATE ${CNN_PKG}/version.c)
target_include_directories(cnn-bench-exchange PRIVATE ${PROJECT_BINARY_DIR}/generated
                                                      ${PROJECT_SOURCE_DIR}/src/cli)

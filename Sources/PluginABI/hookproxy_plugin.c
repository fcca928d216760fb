/* The PluginABI target is the header in include/; SwiftPM needs one source file to build a C target. */
#include "hookproxy_plugin.h"

import PluginABI
import PluginKit

/// The plugin's one exported symbol (see `hookproxy_plugin.h`).
@_cdecl("hookproxy_plugin_entry")
public func hookproxyPluginEntry(_ hostABIVersion: UInt32, _ host: UnsafePointer<hookproxy_host>?)
    -> UnsafePointer<hookproxy_plugin>?
{
    PluginExport.entry(GitHubMapper.self, host: host)
}

import Foundation
import JSONRPC
import Testing
import VhostBlkAPI
@testable import VhostTarget

/// The method table (`VhostTarget.methods`): one entry per served method,
/// registered by its module, with the flag that decides `--persist` rewrites.
@Suite struct RPCMethodTableTests {
    @Test func everyMethodOnceInTheOrderRpcGetMethodsLists() {
        let names = VhostTarget.methods.map(\.name)
        #expect(names == VhostBlkMethods.all)
        #expect(Set(names).count == names.count, "a method registered twice")
        #expect(VhostTarget.methodTable.count == names.count)
    }

    @Test func eachModuleListRegistersItsOwnModule() {
        let lists: [(VhostTarget.RPCMethod.Module, [VhostTarget.RPCMethod])] = [
            (.bdev, VhostTarget.bdevRPCMethods), (.stats, VhostTarget.statsRPCMethods), (.qos, VhostTarget.qosRPCMethods),
            (.vhost, VhostTarget.vhostRPCMethods), (.framework, VhostTarget.frameworkRPCMethods),
            (.log, VhostTarget.logRPCMethods),
        ]
        for (module, methods) in lists {
            #expect(!methods.isEmpty)
            for method in methods { #expect(method.module == module, "\(method.name)") }
        }
    }

    /// The flag agrees with each method's `x-mutates-config` in
    /// api/vhost-blkd.openrpc.json, and every method save_config writes
    /// (whose replay rebuilds state) has it.
    @Test func mutatesConfigMatchesTheContract() throws {
        var components = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        components.removeLast(3)  // Tests/VhostTargetTests/RPCMethodTableTests.swift
        let path = (components + ["api", "vhost-blkd.openrpc.json"]).joined(separator: "/")
        let document = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        let documented = try #require(document["methods"]?.arrayValue)
        #expect(documented.count == VhostTarget.methods.count)
        for entry in documented {
            let name = try #require(entry["name"]?.stringValue)
            let flag = entry["x-mutates-config"]?.boolValue
            #expect(flag != nil, "\(name) has no x-mutates-config")
            #expect(VhostTarget.methodTable[name]?.mutatesConfig == flag, "\(name)")
        }
        let saved = [BdevUringCreateParams.method, BdevAioCreateParams.method, BdevMallocCreateParams.method,
                     BdevNullCreateParams.method, BdevSetQosLimitParams.method, VhostCreateBlkControllerParams.method]
        for name in saved { #expect(VhostTarget.methodTable[name]?.mutatesConfig == true, "\(name)") }
        #expect(VhostTarget.methodTable[BdevResetIostatParams.method]?.mutatesConfig == false)
        // A log level lasts until the restart: --log-level is the lasting one, and
        // save_config files (SPDK's too) carry no log calls.
        for name in [LogSetLevelParams.method, LogSetPrintLevelParams.method] {
            #expect(VhostTarget.methodTable[name]?.mutatesConfig == false, "\(name)")
        }
    }
}

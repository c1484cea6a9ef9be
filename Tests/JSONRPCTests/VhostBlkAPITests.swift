import JSONRPC
import Testing
import VhostBlkAPI

private func roundTrip<P: RPCMethodParams>(_ value: P) throws {
    let decoded = try P(params: value.json)
    #expect(decoded == value, "\(P.method)")
    let reparsed = try JSON.parse(value.json.encoded())
    #expect(try P(params: reparsed) == value, "\(P.method) via text")
}

private func rejection<P: RPCMethodParams>(_ type: P.Type, _ params: JSON) -> RPCError? {
    do {
        _ = try P(params: params)
        return nil
    } catch {
        return error
    }
}

@Suite struct VhostBlkAPITests {
    @Test func roundTrips() throws {
        try roundTrip(BdevUringCreateParams(filename: "/f", name: "u"))
        try roundTrip(BdevUringCreateParams(filename: "/f", name: "u", blockSize: 4096, uuid: "1234"))
        try roundTrip(BdevUringDeleteParams(name: "u"))
        try roundTrip(BdevAioCreateParams(filename: "/f", name: "a"))
        try roundTrip(
            BdevAioCreateParams(
                filename: "/f", name: "a", blockSize: 512, readonly: true, fallocate: true, uuid: "u", nowait: true))
        try roundTrip(BdevAioDeleteParams(name: "a"))
        try roundTrip(BdevMallocCreateParams(numBlocks: 131072, blockSize: 512))
        try roundTrip(
            BdevMallocCreateParams(
                numBlocks: UInt64(Int64.max), blockSize: 4096, name: "m", uuid: "u", physicalBlockSize: 4096,
                optimalIoBoundary: 8, numaId: 0))
        try roundTrip(BdevMallocDeleteParams(name: "m"))
        try roundTrip(BdevNullCreateParams(name: "n", numBlocks: 1, blockSize: 512))
        try roundTrip(
            BdevNullCreateParams(
                name: "n", numBlocks: 1, blockSize: 512, uuid: "u", physicalBlockSize: 4096,
                preferredWriteAlignment: 1, preferredWriteGranularity: 2, optimalWriteSize: 3,
                preferredUnmapAlignment: 4, preferredUnmapGranularity: 5))
        try roundTrip(BdevNullDeleteParams(name: "n"))
        try roundTrip(BdevGetBdevsParams())
        try roundTrip(BdevGetBdevsParams(name: "x", timeout: 5))
        try roundTrip(VhostCreateBlkControllerParams(ctrlr: "c", devName: "d"))
        try roundTrip(
            VhostCreateBlkControllerParams(
                ctrlr: "c", devName: "d", cpumask: "0x3", readonly: true, packedRing: true, transport: "t"))
        try roundTrip(VhostGetControllersParams())
        try roundTrip(VhostGetControllersParams(name: "c"))
        try roundTrip(VhostDeleteControllerParams(ctrlr: "c"))
        try roundTrip(RpcGetMethodsParams())
        try roundTrip(RpcGetMethodsParams(current: true, includeAliases: true))
        try roundTrip(SpdkGetVersionParams())
    }

    /// The params spdk-rpc 26.9 sent for each command, captured with a stub server.
    @Test func acceptsWhatRpcPySends() throws {
        let uring = try BdevUringCreateParams(params: ["filename": "/tmp/f", "name": "u1", "block_size": 4096, "uuid": "1234"])
        #expect(uring == BdevUringCreateParams(filename: "/tmp/f", name: "u1", blockSize: 4096, uuid: "1234"))
        let aio = try BdevAioCreateParams(params: [
            "filename": "/tmp/f", "name": "a1", "block_size": 512, "readonly": true, "fallocate": true, "nowait": false,
        ])
        #expect(aio == BdevAioCreateParams(filename: "/tmp/f", name: "a1", blockSize: 512, readonly: true, fallocate: true))
        let malloc = try BdevMallocCreateParams(params: [
            "num_blocks": 131072, "block_size": 512, "name": "m0", "md_interleave": false, "dif_is_head_of_md": false,
        ])
        #expect(malloc == BdevMallocCreateParams(numBlocks: 131072, blockSize: 512, name: "m0"))
        let null = try BdevNullCreateParams(params: [
            "num_blocks": 131072, "block_size": 512, "name": "n0", "dif_is_head_of_md": false,
        ])
        #expect(null == BdevNullCreateParams(name: "n0", numBlocks: 131072, blockSize: 512))
        #expect(try BdevGetBdevsParams(params: nil) == BdevGetBdevsParams())
        #expect(try BdevGetBdevsParams(params: ["name": "x", "timeout": 5]) == BdevGetBdevsParams(name: "x", timeout: 5))
        let controller = try VhostCreateBlkControllerParams(params: [
            "ctrlr": "c0", "dev_name": "m0", "cpumask": "0x1", "transport": "t", "readonly": true, "packed_ring": true,
        ])
        #expect(controller.packedRing && controller.readonly && controller.cpumask == "0x1")
        #expect(try VhostGetControllersParams(params: nil) == VhostGetControllersParams())
        #expect(try RpcGetMethodsParams(params: ["current": true, "include_aliases": false]).current)
        #expect(try SpdkGetVersionParams(params: nil) == SpdkGetVersionParams())
        #expect(try SpdkGetVersionParams(params: [:]) == SpdkGetVersionParams())
    }

    @Test func metadataOptionsOnlyAtDefaults() throws {
        _ = try BdevMallocCreateParams(params: [
            "num_blocks": 1, "block_size": 512, "md_size": 0, "dif_type": 0, "dif_pi_format": 0,
        ])
        let md = rejection(BdevMallocCreateParams.self, ["num_blocks": 1, "block_size": 512, "md_size": 8])
        #expect(md?.code == -32602)
        #expect(md?.message.contains("md_size") == true)
        let dif = rejection(BdevNullCreateParams.self, ["name": "n", "num_blocks": 1, "block_size": 512, "dif_type": 1])
        #expect(dif?.message.contains("dif_type") == true)
        let interleave = rejection(
            BdevMallocCreateParams.self, ["num_blocks": 1, "block_size": 512, "md_interleave": true])
        #expect(interleave?.message.contains("md_interleave") == true)
        // bdev_null_create has no md_interleave in SPDK.
        let unknown = rejection(
            BdevNullCreateParams.self, ["name": "n", "num_blocks": 1, "block_size": 512, "md_interleave": false])
        #expect(unknown?.message == "Unknown parameter 'md_interleave'")
    }

    @Test func rejectsUnknownMissingAndMistyped() {
        #expect(rejection(BdevUringDeleteParams.self, ["name": "u", "foo": 1])?.message == "Unknown parameter 'foo'")
        #expect(rejection(BdevUringDeleteParams.self, [:])?.message == "Missing required parameter 'name'")
        #expect(rejection(BdevUringDeleteParams.self, nil)?.code == -32602)
        #expect(
            rejection(BdevMallocCreateParams.self, ["num_blocks": -1, "block_size": 512])?.message
                == "Parameter 'num_blocks' is out of range for uint64")
        #expect(rejection(SpdkGetVersionParams.self, ["x": 1])?.message == "Unknown parameter 'x'")
        #expect(rejection(VhostDeleteControllerParams.self, ["ctrlr": 1])?.code == -32602)
    }

    @Test func methodListIsComplete() {
        #expect(VhostBlkMethods.all.count == 44)
        #expect(Set(VhostBlkMethods.all).count == VhostBlkMethods.all.count)
        #expect(VhostBlkMethods.paramType(for: "bdev_null_create") == BdevNullCreateParams.self)
        #expect(VhostBlkMethods.paramType(for: "nope") == nil)
    }
}

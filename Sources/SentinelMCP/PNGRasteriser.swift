import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// SVG to PNG with librsvg and cairo, loaded when first needed (Debian's `librsvg2-2` and
/// `libcairo2`, the libraries GNOME renders SVG with), so that the build needs neither their
/// headers nor their presence: where they are missing, charts are SVG only and say so.
enum PNGRasteriser {
    typealias NewFromData = @convention(c) (UnsafePointer<UInt8>?, UInt, UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer?
    /// The viewport is librsvg's `RsvgRectangle`: four doubles (x, y, width, height).
    typealias RenderDocument = @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeRawPointer?, UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    typealias SurfaceCreate = @convention(c) (Int32, Int32, Int32) -> OpaquePointer?
    typealias Create = @convention(c) (OpaquePointer?) -> OpaquePointer?
    typealias Release = @convention(c) (OpaquePointer?) -> Void
    typealias WriteFunction = @convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, UInt32) -> Int32
    typealias WritePNG = @convention(c) (OpaquePointer?, WriteFunction, UnsafeMutableRawPointer?) -> Int32

    /// The C functions, resolved once. Unchecked: C function pointers of libraries that stay
    /// loaded for the life of the process.
    struct Library: @unchecked Sendable {
        let newFromData: NewFromData
        let renderDocument: RenderDocument
        let unref: Release
        let surfaceCreate: SurfaceCreate
        let create: Create
        let destroy: Release
        let surfaceDestroy: Release
        let writePNG: WritePNG
    }

    static let library: Library? = {
        guard let rsvg = dlopen("librsvg-2.so.2", RTLD_NOW | RTLD_LOCAL), let cairo = dlopen("libcairo.so.2", RTLD_NOW | RTLD_LOCAL) else { return nil }
        func symbol<T>(_ handle: UnsafeMutableRawPointer, _ name: String, as type: T.Type) -> T? {
            dlsym(handle, name).map { unsafeBitCast($0, to: type) }
        }
        guard let newFromData = symbol(rsvg, "rsvg_handle_new_from_data", as: NewFromData.self),
            let renderDocument = symbol(rsvg, "rsvg_handle_render_document", as: RenderDocument.self),
            let unref = symbol(rsvg, "g_object_unref", as: Release.self),
            let surfaceCreate = symbol(cairo, "cairo_image_surface_create", as: SurfaceCreate.self),
            let create = symbol(cairo, "cairo_create", as: Create.self), let destroy = symbol(cairo, "cairo_destroy", as: Release.self),
            let surfaceDestroy = symbol(cairo, "cairo_surface_destroy", as: Release.self),
            let writePNG = symbol(cairo, "cairo_surface_write_to_png_stream", as: WritePNG.self)
        else { return nil }
        return Library(
            newFromData: newFromData, renderDocument: renderDocument, unref: unref, surfaceCreate: surfaceCreate, create: create, destroy: destroy,
            surfaceDestroy: surfaceDestroy, writePNG: writePNG)
    }()

    static var isAvailable: Bool { library != nil }

    /// Collects what cairo writes.
    final class Sink {
        var data = Data()
    }

    /// The SVG drawn on a `width` x `height` canvas as a PNG; nil when the libraries are
    /// missing or refuse the document.
    static func png(svg: String, width: Int, height: Int) -> Data? {
        guard let library, width > 0, height > 0, width <= 4_096, height <= 4_096 else { return nil }
        let bytes = Array(svg.utf8)
        guard let handle = bytes.withUnsafeBufferPointer({ library.newFromData($0.baseAddress, UInt($0.count), nil) }) else { return nil }
        defer { library.unref(handle) }
        guard let surface = library.surfaceCreate(0 /* CAIRO_FORMAT_ARGB32 */, Int32(width), Int32(height)) else { return nil }
        defer { library.surfaceDestroy(surface) }
        guard let context = library.create(surface) else { return nil }
        let viewport: [Double] = [0, 0, Double(width), Double(height)]
        let rendered = viewport.withUnsafeBytes { library.renderDocument(handle, context, $0.baseAddress, nil) }
        library.destroy(context)
        guard rendered != 0 else { return nil }
        let sink = Sink()
        let status = library.writePNG(surface, { closure, data, length in
            guard let closure, let data else { return 11 /* CAIRO_STATUS_WRITE_ERROR */ }
            Unmanaged<Sink>.fromOpaque(closure).takeUnretainedValue().data.append(data, count: Int(length))
            return 0
        }, Unmanaged.passUnretained(sink).toOpaque())
        return status == 0 ? sink.data : nil
    }
}

import {
  type DescEnum,
  type DescFile,
  type DescMessage,
  type DescService,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type {
  ServerReflection,
  ServerReflectionRequest,
  ServerReflectionResponseSchema,
} from "@coinmesh/proto/grpc/reflection/v1/reflection_pb";
import { Code, type ServiceImpl } from "@connectrpc/connect";

type Answer = MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"];

/** The given files and everything they import, each after its dependencies. */
function filesOf(roots: DescFile[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    for (const dep of file.dependencies) visit(dep);
    seen.set(file.name, file);
  };
  roots.forEach(visit);
  return [...seen.values()];
}

/** Fully-qualified names of everything a file declares, as reflection clients ask for them. */
function symbolsOf(file: DescFile): string[] {
  const names: string[] = [];
  const addEnum = (e: DescEnum) => names.push(e.typeName);
  const addMessage = (m: DescMessage) => {
    names.push(m.typeName);
    m.nestedMessages.forEach(addMessage);
    m.nestedEnums.forEach(addEnum);
    for (const ext of m.nestedExtensions) names.push(ext.typeName);
  };
  file.messages.forEach(addMessage);
  file.enums.forEach(addEnum);
  for (const ext of file.extensions) names.push(ext.typeName);
  for (const service of file.services) {
    names.push(service.typeName);
    for (const method of service.methods) names.push(`${service.typeName}.${method.name}`);
  }
  return names;
}

/**
 * grpc.reflection.v1 describing the given services, so `buf curl` and grpcurl need no schema.
 * A file is answered together with all of its dependencies.
 */
export function reflectionHandlers(services: DescService[]): ServiceImpl<typeof ServerReflection> {
  const files = filesOf(services.map((s) => s.file));
  const byName = new Map(files.map((f) => [f.name, f]));
  const bySymbol = new Map(files.flatMap((f) => symbolsOf(f).map((s) => [s, f] as const)));
  const encoded = new Map(
    files.map((f) => [f, toBinary(FileDescriptorProtoSchema, f.proto)] as const),
  );
  const withDependencies = (file: DescFile): Answer => ({
    case: "fileDescriptorResponse",
    value: { fileDescriptorProto: filesOf([file]).map((f) => encoded.get(f) as Uint8Array) },
  });
  const notFound = (what: string): Answer => ({
    case: "errorResponse",
    value: { errorCode: Code.NotFound, errorMessage: `${what} not found` },
  });

  function answer(req: ServerReflectionRequest): Answer {
    const { messageRequest: r } = req;
    switch (r.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: services.map((s) => ({ name: s.typeName })) },
        };
      case "fileByFilename": {
        const file = byName.get(r.value);
        return file ? withDependencies(file) : notFound(`file ${r.value}`);
      }
      case "fileContainingSymbol": {
        const file = bySymbol.get(r.value.replace(/^\./, ""));
        return file ? withDependencies(file) : notFound(`symbol ${r.value}`);
      }
      case "allExtensionNumbersOfType":
        return bySymbol.has(r.value)
          ? {
              case: "allExtensionNumbersResponse",
              value: { baseTypeName: r.value, extensionNumber: [] },
            }
          : notFound(`type ${r.value}`);
      case "fileContainingExtension":
        return notFound(`extension ${r.value.containingType}/${r.value.extensionNumber}`);
      default:
        return {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "empty request" },
        };
    }
  }

  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield { validHost: req.host, originalRequest: req, messageResponse: answer(req) };
      }
    },
  };
}

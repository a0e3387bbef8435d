// The text codecs the guest's JavaScript engine (StarlingMonkey) provides.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  decode(input?: Uint8Array): string;
}

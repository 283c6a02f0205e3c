// What the page keeps in the browser: the approver's identity (a non-extractable
// CryptoKey and their credential) in IndexedDB, and the gallery of image generations.
// A CryptoKey stored in IndexedDB stays non-extractable: the page can sign with it, never
// read it.

const DB = "aura-ui";
const VERSION = 1;

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("identity")) db.createObjectStore("identity");
      if (!db.objectStoreNames.contains("gallery")) db.createObjectStore("gallery", { keyPath: "id" });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx<T>(store: string, mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const req = f(t.objectStore(store));
    t.oncomplete = () => {
      db.close();
      resolve(req.result);
    };
    t.onerror = () => {
      db.close();
      reject(t.error);
    };
  });
}

export interface Identity {
  name: string;
  publicKey: string;
  privateKey: CryptoKey;
  /** The node-signed credential `{statement, signature}` binding the key to a level. */
  credential?: unknown;
}

export const loadIdentity = () => tx<Identity | undefined>("identity", "readonly", (s) => s.get("approver"));
export const saveIdentity = (i: Identity) => tx("identity", "readwrite", (s) => s.put(i, "approver"));
export const forgetIdentity = () => tx("identity", "readwrite", (s) => s.delete("approver"));

export interface Generation {
  id: string;
  createdAt: number;
  params: Record<string, unknown>;
  image: Blob;
  receipt?: string;
}

export const listGallery = () => tx<Generation[]>("gallery", "readonly", (s) => s.getAll());
export const saveGeneration = (g: Generation) => tx("gallery", "readwrite", (s) => s.put(g));
export const deleteGeneration = (id: string) => tx("gallery", "readwrite", (s) => s.delete(id));
